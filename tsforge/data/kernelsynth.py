"""KernelSynth: series drawn from Gaussian-process priors with random composite kernels, the
synthetic pretraining data of Chronos (Ansari et al. 2024, "Chronos: Learning the Language of
Time Series", Section 4.2 and Algorithm 2).

    from tsforge.data import kernelsynth
    y_BW = kernelsynth.sample(seeds, length=192)      # one series per seed, float32 [B, W]
    y_W = kernelsynth.series(np.random.SeedSequence([0, 7]), 192)

For each series: draw j uniformly in 1..MAX_KERNELS, draw j kernels with replacement from the
bank below, combine them left to right with + or * (each chosen with probability 1/2), and
draw the series from GP(0, K) on the first `length` points of Chronos's grid
x_t = t / REFERENCE_LENGTH (so periods are in steps, and length scales mean what they mean in
Chronos, whose series are 1,024 points). The bank is Chronos's: ExpSineSquared at periods of
hourly, daily, weekly, monthly, quarterly and yearly seasonalities; DotProduct (linear trends)
with sigma_0 in {0, 1, 10}; RBF and RationalQuadratic at three scales; WhiteKernel (noise) at
two levels; a constant.

The draw is exact: y = chol(K + jitter I) z with z ~ N(0, I), in float64. The jitter starts at
1e-6 of K's mean diagonal (what keeps the Cholesky of smooth kernels, which are numerically
singular, from failing) and grows tenfold up to 5 times; a kernel still not factorised then
is drawn through its eigendecomposition with negative eigenvalues clipped to 0. Stationary
kernels on this uniform grid are Toeplitz: they are evaluated and combined on the vector of
lags (O(W)) and expanded to W x W once; only the DotProduct needs the full matrix.

Every series is a pure function of its SeedSequence: the mixture loader seeds each window
from (seed, split, epoch, position), so a window is the same whichever worker or rank makes
it, and nothing is written to disk. Measured cost: see `python -m tsforge.data.kernelsynth`
(prints the time of a batch of 256 series at several lengths on one core).
"""

from __future__ import annotations

import functools
import time

import numpy as np

REFERENCE_LENGTH = 1024  # Chronos's series length: the grid the kernels' scales refer to
MAX_KERNELS = 5  # j <= 5, as in Chronos

# (kind, parameter): periodic (period in steps), linear (sigma_0), rbf (length scale),
# rq (alpha, length scale 1), white (noise level), constant (value).
_PERIODS = (24, 48, 96, 24 * 7, 48 * 7, 96 * 7, 7, 14, 30, 60, 365, 365 * 2, 4, 26, 52, 6,
            12, 40, 10)  # fmt: skip
KERNEL_BANK: tuple[tuple[str, float], ...] = (
    *(("periodic", float(p)) for p in _PERIODS),
    ("linear", 0.0), ("linear", 1.0), ("linear", 10.0),
    ("rbf", 0.1), ("rbf", 1.0), ("rbf", 10.0),
    ("rq", 0.1), ("rq", 1.0), ("rq", 10.0),
    ("white", 0.1), ("white", 1.0),
    ("constant", 1.0),
)  # fmt: skip


def _lag_kernel(kind: str, p: float, lag: np.ndarray) -> np.ndarray:
    """A stationary kernel at lags (in grid units) `lag`."""
    if kind == "periodic":  # ExpSineSquared, length scale 1
        return np.exp(-2.0 * np.sin(np.pi * lag * REFERENCE_LENGTH / p) ** 2)
    if kind == "rbf":
        return np.exp(-0.5 * (lag / p) ** 2)
    if kind == "rq":  # RationalQuadratic, length scale 1
        return (1.0 + lag**2 / (2.0 * p)) ** -p
    if kind == "white":
        return np.where(lag == 0, p, 0.0)
    if kind == "constant":
        return np.full_like(lag, p)
    raise ValueError(f"not a stationary kernel: {kind}")


def covariance(kernels: list[tuple[str, float]], ops: list[str], length: int) -> np.ndarray:
    """K [W, W] of kernels combined left to right by `ops` ('+' or '*'), on the grid."""
    x = np.arange(length, dtype=np.float64) / REFERENCE_LENGTH  # also |x_i - x_j| at lag i

    def value(kind, p):
        if kind == "linear":
            k = np.outer(x, x)
            k += p * p
            return k
        return _lag_kernel(kind, p, x)

    acc = value(*kernels[0])
    for (kind, p), op in zip(kernels[1:], ops):
        k = value(kind, p)
        if acc.ndim != k.ndim:
            acc, k = np.array(_full(acc)), _full(k)  # acc: a writable copy
        if acc.ndim == 2 and op == "+":  # in place: W x W temporaries cost most here
            acc += k
        elif acc.ndim == 2:
            acc *= k
        else:
            acc = acc + k if op == "+" else acc * k
    return np.array(_full(acc))


def _full(k: np.ndarray) -> np.ndarray:
    """The symmetric Toeplitz matrix of lag vector k (a strided view), or k itself."""
    if k.ndim == 2:
        return k
    W = len(k)
    v = np.concatenate([k[:0:-1], k])  # k[W-1], ..., k[1], k[0], k[1], ..., k[W-1]
    return np.lib.stride_tricks.sliding_window_view(v, W)[::-1]


def draw_kernels(rng: np.random.Generator) -> tuple[list[tuple[str, float]], list[str]]:
    """j kernels from the bank (with replacement) and the j-1 operators joining them."""
    j = int(rng.integers(1, MAX_KERNELS + 1))
    picks = rng.integers(0, len(KERNEL_BANK), j)
    ops = ["+" if b else "*" for b in rng.integers(0, 2, j - 1)]
    return [KERNEL_BANK[i] for i in picks], ops


def gp_draw(K: np.ndarray, z: np.ndarray) -> np.ndarray:
    """chol(K + jitter I) @ z, the jitter grown as needed (see module doc); K is changed."""
    diag = np.einsum("ii->i", K)  # a writable view of K's diagonal
    jitter = 1e-6 * max(float(diag.mean()), 1e-12)
    added = 0.0
    for _ in range(6):
        diag += jitter - added
        added = jitter
        try:
            return np.linalg.cholesky(K) @ z
        except np.linalg.LinAlgError:
            jitter *= 10.0
    diag -= added
    vals, vecs = np.linalg.eigh(K)
    return vecs @ (np.sqrt(np.clip(vals, 0.0, None)) * z)


def series(seed: np.random.SeedSequence, length: int) -> np.ndarray:
    """One KernelSynth series of `length` points (float64), a pure function of `seed`."""
    rng = np.random.default_rng(seed)
    kernels, ops = draw_kernels(rng)
    z = rng.standard_normal(length)
    return gp_draw(covariance(kernels, ops, length), z)


def sample(seeds: list, length: int) -> np.ndarray:
    """[B, length] float32: one series per entry of `seeds` (each a SeedSequence or a list of
    non-negative ints).

    numpy's BLAS runs on one thread here, whatever it would take by default (every core): a
    window's matrices are small, the parallelism is across ranks and loader workers, and
    several processes each running a BLAS thread per core made a 2-rank run on 2 cores 20x
    slower (52 ms a window at 384 points instead of 2.7)."""
    out = np.empty((len(seeds), length), np.float32)
    with _blas().limit(limits=1, user_api="blas"):
        for i, s in enumerate(seeds):
            ss = s if isinstance(s, np.random.SeedSequence) else np.random.SeedSequence(s)
            out[i] = series(ss, length)
    return out


@functools.cache
def _blas():
    """This process's BLAS libraries (threadpoolctl), found once."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _timing() -> None:
    """Seconds for a batch of 256 series at a few lengths (run with one thread)."""
    for W in (120, 192, 384, 600):
        seeds = [[0, i] for i in range(256)]
        t0 = time.perf_counter()
        sample(seeds, W)
        print(f"W={W}: {time.perf_counter() - t0:.3f} s for 256 series", flush=True)


if __name__ == "__main__":  # OMP_NUM_THREADS=1 python -m tsforge.data.kernelsynth
    _timing()
