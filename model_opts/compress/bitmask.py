"""Bitmask (sparse) storage of one layer's int8 weights: a presence mask, then the nonzero values.

Steps of `encode_bitmask(values)`:
1. Mask: ceil(n/8) bytes, bit j set <=> values[j] != 0, stream bit b = bit (b % 8) of byte b // 8
   (LSB-first, the bit order of every har-memopt stream); unused tail bits zero (`np.packbits`).
2. Directly after it, the nonzero values as int8, in order.
`decode_bitmask(data, n)` inverts it, refusing a stream too short for its mask or for the nonzero values
the mask announces: the Python mirror of `har_decode_bitmask` (system_opts/csrc/har_decode.c), which is
equally lenient about bytes after the values and about set tail bits past n (neither is read);
`model_opts.compress.layer.decode` checks exact sizes.
Limits: pays off only below ~7/8 density (the mask costs 1 bit per weight).
"""
from __future__ import annotations

import numpy as np

from har.errors import BadDataError


def mask_bytes(n: int) -> int:
    return (n + 7) // 8


def encode_bitmask(values: np.ndarray) -> bytes:
    v = np.asarray(values)
    if v.dtype != np.int8 or v.ndim != 1:
        raise BadDataError(f"bitmask input must be a 1-D int8 array, got {v.dtype} with shape {v.shape}")
    nonzero = v != 0
    return np.packbits(nonzero, bitorder="little").tobytes() + v[nonzero].tobytes()


def decode_bitmask(data: bytes, n: int) -> np.ndarray:
    """The n int8 values of a stream written by `encode_bitmask`."""
    if n < 0:
        raise BadDataError(f"cannot decode {n} values")
    mb = mask_bytes(n)
    if len(data) < mb:
        raise BadDataError(f"bitmask stream truncated: {len(data)} bytes, its mask alone needs {mb}")
    raw = np.frombuffer(data, np.uint8)
    nonzero = np.unpackbits(raw[:mb], count=n, bitorder="little").astype(bool)
    nnz = int(nonzero.sum())
    if len(data) < mb + nnz:
        raise BadDataError(f"bitmask stream truncated: {len(data)} bytes, mask and {nnz} values need {mb + nnz}")
    out = np.zeros(n, dtype=np.int8)
    out[nonzero] = raw[mb:mb + nnz].view(np.int8)
    return out
