"""Palette (weight-clustering) storage of one layer's int8 weights: a codebook of k <= 16 distinct values
and one `bits`-bit index per weight.

Steps:
1. `build_codebook(values)`: the distinct values, sorted ascending (`np.unique`), and each weight's index
   into them. More than `MAX_K` distinct values is BadDataError (cluster the weights first).
2. `index_bits(k)` = max(1, ceil(log2 k)).
3. `pack_indices(indices, bits)`: index j occupies stream bits [j*bits, (j+1)*bits), least significant
   bit first; stream bit b is bit (b % 8) of byte b // 8 (LSB-first, as DEFLATE). ceil(n*bits/8) bytes,
   the unused tail bits zero. Vectorised: an (n, bits) bit matrix through `np.packbits(bitorder="little")`.
4. `unpack_indices(data, bits, n)` inverts it; `decode_palette(data, bits, codebook, n)` also maps the
   indices through the codebook, refusing an index >= k: the Python mirror of `har_decode_palette`
   (system_opts/csrc/har_decode.c).
Limits: bits in 1..8 (an index is a uint8); a stream longer than needed is accepted here (the extra bytes
are ignored, as the C decoder does); `model_opts.compress.layer.decode` checks exact sizes.
"""
from __future__ import annotations

import numpy as np

from har.errors import BadDataError

MAX_K = 16


def index_bits(k: int) -> int:
    """Bits per index for a codebook of k entries: max(1, ceil(log2 k))."""
    if k < 1:
        raise BadDataError(f"a palette needs at least one codebook entry, got k={k}")
    return max(1, (k - 1).bit_length())


def build_codebook(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codebook int8 (k,) sorted ascending, indices uint8 (n,)) with codebook[indices] == values."""
    v = np.asarray(values)
    if v.dtype != np.int8 or v.ndim != 1:
        raise BadDataError(f"palette input must be a 1-D int8 array, got {v.dtype} with shape {v.shape}")
    codebook, indices = np.unique(v, return_inverse=True)
    if codebook.size > MAX_K:
        raise BadDataError(f"{codebook.size} distinct values; a palette holds at most {MAX_K} (cluster first)")
    return codebook.astype(np.int8), indices.reshape(-1).astype(np.uint8)


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 8:
        raise BadDataError(f"palette index bits must be in 1..8, got {bits}")


def pack_indices(indices: np.ndarray, bits: int) -> bytes:
    """Indices as a bit stream (step 3 of the module docstring)."""
    _check_bits(bits)
    idx = np.asarray(indices)
    if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= 1 << bits)):
        raise BadDataError(f"palette indices must be a 1-D array of values below 2**{bits}")
    planes = (idx.astype(np.uint8)[:, None] >> np.arange(bits, dtype=np.uint8)) & 1  # (n, bits), LSB first
    return np.packbits(planes.reshape(-1), bitorder="little").tobytes()


def stream_bytes(n: int, bits: int) -> int:
    return (n * bits + 7) // 8


def unpack_indices(data: bytes, bits: int, n: int) -> np.ndarray:
    """The n indices of a stream written by `pack_indices`; BadDataError if it holds fewer than n*bits bits."""
    _check_bits(bits)
    if len(data) < stream_bytes(n, bits):
        raise BadDataError(f"palette stream truncated: {len(data)} bytes for {n} indices of {bits} bits "
                           f"(needs {stream_bytes(n, bits)})")
    planes = np.unpackbits(np.frombuffer(data, np.uint8), count=n * bits, bitorder="little")
    weights = (1 << np.arange(bits, dtype=np.uint16)).astype(np.uint16)
    return (planes.reshape(n, bits).astype(np.uint16) @ weights).astype(np.uint8)


def decode_palette(data: bytes, bits: int, codebook: np.ndarray, n: int) -> np.ndarray:
    """codebook[unpack_indices(...)] as int8; an index >= len(codebook) is BadDataError."""
    cb = np.asarray(codebook, dtype=np.int8)
    idx = unpack_indices(data, bits, n)
    if idx.size and int(idx.max()) >= cb.size:
        raise BadDataError(f"palette index {int(idx.max())} outside the codebook of {cb.size} entries")
    return cb[idx]
