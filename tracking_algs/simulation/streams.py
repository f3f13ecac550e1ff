"""Counter-based random numbers: each value is a hash of (key, particle, index, slot), not the next draw of a shared
generator, so what one particle gets does not depend on how many other particles are still being simulated.

The hash is SplitMix64's finaliser (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
OOPSLA 2014) applied twice, the key mixed in between; the key comes from the event's ``SeedSequence``.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
#: counter layout: particle (below 2³⁸) << 26 | index (below 2²²) << 4 | slot (below 16)
_INDEX_SHIFT, _PARTICLE_SHIFT = np.uint64(4), np.uint64(26)


def stream_key(seed: int, event_id: int, stream: int) -> int:
    """A 64-bit key for stream ``stream`` (≥ 1) of event ``event_id`` under ``seed``: from
    ``SeedSequence(seed, spawn_key=(event_id, stream))``, independent of the event's own generator
    (``spawn_key=(event_id,)``)."""
    return int(np.random.SeedSequence(seed, spawn_key=(event_id, stream)).generate_state(1, np.uint64)[0])


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def counter_uniform(key: int, particle: np.ndarray, index: np.ndarray, slot: int | np.ndarray = 0) -> np.ndarray:
    """Uniform values in (0, 1), one per (``particle[k]``, ``index[k]``), for stream ``key`` and ``slot`` (one for
    all, or one per value)."""
    counter = (
        (np.asarray(particle).astype(np.uint64) << _PARTICLE_SHIFT)
        | (np.asarray(index).astype(np.uint64) << _INDEX_SHIFT)
        | np.uint64(slot)
    )
    x = _splitmix(_splitmix(np.atleast_1d(counter)) ^ np.uint64(key))
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def counter_normal(key: int, particle: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Two independent standard normal values [n, 2] per (``particle[k]``, ``index[k]``) (Box–Muller)."""
    radius = np.sqrt(-2.0 * np.log(counter_uniform(key, particle, index, 0)))
    angle = 2.0 * np.pi * counter_uniform(key, particle, index, 1)
    return np.column_stack((radius * np.cos(angle), radius * np.sin(angle)))
