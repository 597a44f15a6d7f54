"""Counter-free pseudo-random numbers for the transport kernels.

xoroshiro128+ (D. Blackman and S. Vigna, "Scrambled linear pseudorandom number
generators", ACM Trans. Math. Softw. 47 (2021) 36), seeded through splitmix64 (Vigna).
The state is two uint64 words held in a caller's array, so the same functions compile
for any backend and every stream is reproducible from ``(seed, batch, chunk)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


@njit(inline="always", cache=True)
def _rotl(x, k):
    return (x << uint64(k)) | (x >> uint64(64 - k))


@njit(cache=True)
def splitmix64(x):
    """One splitmix64 step; returns (new state, output)."""
    x = x + uint64(0x9E3779B97F4A7C15)
    z = x
    z = (z ^ (z >> uint64(30))) * uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> uint64(27))) * uint64(0x94D049BB133111EB)
    return x, z ^ (z >> uint64(31))


@njit(cache=True)
def seed_state(state, seed, stream):
    """Fill ``state[0:2]`` from a 64-bit seed and a stream number (batch, chunk...)."""
    x = uint64(seed) ^ (uint64(stream) * uint64(0xD1B54A32D192ED03))
    x, a = splitmix64(x)
    x, b = splitmix64(x)
    if a == 0 and b == 0:
        b = uint64(1)
    state[0] = a
    state[1] = b


@njit(inline="always", cache=True)
def uniform(state):
    """A float64 in (0, 1) from the 53 high bits of xoroshiro128+."""
    s0 = state[0]
    s1 = state[1]
    result = s0 + s1
    s1 ^= s0
    state[0] = _rotl(s0, 24) ^ s1 ^ (s1 << uint64(16))
    state[1] = _rotl(s1, 37)
    return ((result >> uint64(11)) + uint64(1)) * (1.0 / 9007199254740994.0)
