"""tsforge: train deep time-series forecasting models at scale.

The data layer (`tsforge.data`) streams windows from chunked Zarr stores to every DDP rank.
"""

__version__ = "0.1.0"
