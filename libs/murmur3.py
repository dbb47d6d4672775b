"""MurmurHash3 (x86, 32-bit), in plain Python so every process, replica and Python version
buckets a user identically (Python's own hash() is salted per process)."""
from __future__ import annotations

_MASK = 0xFFFFFFFF
_C1, _C2 = 0xCC9E2D51, 0x1B873593


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _MASK


def _fmix(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    return h ^ (h >> 16)


def hash32(key: str | bytes, seed: int = 0) -> int:
    """Unsigned 32-bit MurmurHash3 of `key` (str is hashed as UTF-8), as mmh3.hash(key,
    seed, signed=False) computes it."""
    data = key.encode("utf-8") if isinstance(key, str) else key
    h = seed & _MASK
    tail_start = len(data) - len(data) % 4
    for i in range(0, tail_start, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = _rotl((k * _C1) & _MASK, 15)
        h ^= (k * _C2) & _MASK
        h = (_rotl(h, 13) * 5 + 0xE6546B64) & _MASK
    tail = data[tail_start:]
    if tail:
        k = int.from_bytes(tail, "little")
        k = _rotl((k * _C1) & _MASK, 15)
        h ^= (k * _C2) & _MASK
    return _fmix(h ^ len(data))
