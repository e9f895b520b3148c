"""Two cheap synthetic priors beside KernelSynth, for pretraining mixtures: random walks and
repeating profiles (`data.sources=[{name: randomwalk}, {name: profiles}, ...]`).

    from tsforge.data import priors
    y_BW = priors.randomwalk([[0, 1], [0, 2]], length=192)   # float32 [B, W], one per seed
    y_BW = priors.profiles([[0, 1], [0, 2]], length=192)

What KernelSynth lacks. Its series are Gaussian-process draws: smooth periodic kernels and
stationary noise. A model pretrained on it over-smooths what a seasonal naive copies exactly
(sharp hourly profiles, as in M4 Hourly) and does not learn that the last value is the best
forecast of a random walk (exchange rates). These two priors put both in the mixture.

randomwalk: level + cumulative sum of steps. Steps are Gaussian or Student-t (3 or 5 degrees
of freedom: heavy tails), with a drift half of the time; a third of the walks mean-revert
(AR(1), coefficient 0.90-0.999); a quarter have a few level shifts. The scale is irrelevant
(windows are scaled), the level is drawn so that some walks sit far from zero.

profiles: a profile of one period (4 to 168 steps) built from a few bumps of random width,
narrow ones making sharp peaks, plus a square-wave part half of the time; tiled over the
series with an amplitude that drifts slowly, half of the time multiplied by a second, longer
cycle of 7 periods (a weekly pattern over a daily one), plus a level, a trend, noise of
0-20% of the profile's spread and rare spikes.

Each series is a pure function of its SeedSequence (as kernelsynth.sample): the mixture seeds
each window from (seed, source index, split, epoch, position).
"""

from __future__ import annotations

import numpy as np

PERIODS = (4, 6, 7, 12, 24, 24, 24, 48, 52, 96, 168)  # 24 (hourly, daily cycle) most often
VERSION = 1  # part of a mixture's fingerprint: change it when a draw changes


def _rngs(seeds: list) -> list[np.random.Generator]:
    return [np.random.default_rng(s if isinstance(s, np.random.SeedSequence)
                                  else np.random.SeedSequence(s)) for s in seeds]  # fmt: skip


def _each(draw, seeds: list, length: int) -> np.ndarray:
    out = np.empty((len(seeds), length), np.float32)
    for i, rng in enumerate(_rngs(seeds)):
        out[i] = draw(rng, length)
    return out


def randomwalk(seeds: list, length: int) -> np.ndarray:
    """[B, length] float32: one random walk per entry of `seeds` (see the module doc)."""
    return _each(_walk, seeds, length)


def _walk(rng: np.random.Generator, W: int) -> np.ndarray:
    df = rng.choice([0, 3, 5])  # 0: Gaussian
    e = rng.standard_normal(W) if df == 0 else rng.standard_t(df, W) / np.sqrt(df / (df - 2))
    drift = rng.normal(0.0, 0.1) if rng.random() < 0.5 else 0.0
    steps = e + drift
    if rng.random() < 0.25:  # level shifts
        at = rng.integers(0, W, size=rng.integers(1, 4))
        steps[at] += rng.normal(0.0, 10.0, size=len(at))
    if rng.random() < 1 / 3:  # mean-reverting
        phi = rng.uniform(0.90, 0.999)
        y = np.empty(W)
        acc = 0.0
        for t in range(W):
            acc = phi * acc + steps[t]
            y[t] = acc
    else:
        y = np.cumsum(steps)
    level = rng.uniform(0.0, 30.0) * np.sqrt(W) * (1 if rng.random() < 0.8 else -1)
    return (level + y).astype(np.float32)


def profiles(seeds: list, length: int) -> np.ndarray:
    """[B, length] float32: one repeating-profile series per entry of `seeds`."""
    return _each(_profile_series, seeds, length)


def _one_period(rng: np.random.Generator, p: int) -> np.ndarray:
    x = np.arange(p)
    shape = np.zeros(p)
    for _ in range(rng.integers(1, 5)):  # bumps, circular in the period
        centre, width = rng.uniform(0, p), rng.uniform(0.02, 0.3) * p
        d = np.minimum(np.abs(x - centre), p - np.abs(x - centre))
        shape += rng.normal(0.0, 1.0) * np.exp(-0.5 * (d / max(width, 0.5)) ** 2)
    if rng.random() < 0.5:  # a square wave: on for part of the period
        start, span = rng.integers(0, p), rng.integers(1, max(2, p // 2) + 1)
        shape += rng.normal(0.0, 1.0) * ((x - start) % p < span)
    spread = shape.std()
    return (shape - shape.mean()) / (spread if spread > 0 else 1.0)


def _profile_series(rng: np.random.Generator, W: int) -> np.ndarray:
    p = int(rng.choice(PERIODS))
    t = np.arange(W)
    season = _one_period(rng, p)[t % p]
    if rng.random() < 0.5:  # a longer cycle of 7 periods over the short one
        season = season * (1.0 + rng.uniform(0.1, 0.6) * _one_period(rng, 7)[(t // p) % 7])
    amplitude = np.exp(np.cumsum(rng.normal(0.0, 0.01, W)))  # drifts slowly
    level = rng.uniform(2.0, 20.0)
    trend = rng.normal(0.0, 0.005) * t if rng.random() < 0.5 else 0.0
    if rng.random() < 0.5:  # multiplicative: the swing grows with the level
        y = (level + trend) * (1.0 + 0.1 * amplitude * season)
    else:
        y = level + trend + amplitude * season
    y = y + rng.uniform(0.0, 0.2) * rng.standard_normal(W) * np.std(amplitude * season)
    if rng.random() < 0.2:  # rare spikes
        at = rng.integers(0, W, size=rng.integers(1, 4))
        y[at] += rng.normal(0.0, 3.0, size=len(at)) * np.std(season)
    return y.astype(np.float32)


GENERATED = {"randomwalk": randomwalk, "profiles": profiles}


def _timing() -> None:
    import time

    for name, fn in GENERATED.items():
        seeds = [[0, i] for i in range(256)]
        start = time.perf_counter()
        fn(seeds, 512)
        print(f"{name}: 256 series of 512 steps in {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":  # python -m tsforge.data.priors
    _timing()
