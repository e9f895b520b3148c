"""The data layer: chunked Zarr stores, validated ingest, and a streaming window loader.

It knows nothing of models; the trainer asks it for batches.
"""
