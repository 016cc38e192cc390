"""One layer's stored int8 weights in one of four formats, with the checks a loader needs.

`encode(values, format, over_indices=False) -> EncodedLayer`; `decode(layer)` gives the values back exactly.
Formats (the bit streams are specified in palette.py, huffman.py and bitmask.py; the C decoders are
system_opts/csrc/har_decode.c):
- "dense": the int8 bytes as they are (8 bits per weight).
- "palette": sorted codebook of k <= 16 values + `bits` = max(1, ceil(log2 k)) bits per weight.
- "huffman": canonical Huffman (<= 15-bit codes) over the int8 values as uint8 (alphabet 256), or with
  `over_indices=True` over palette indices (alphabet k; the codebook is stored, `bits` = index bits).
- "bitmask": ceil(n/8) presence-mask bytes + the nonzero int8 values.
Steps of `decode`: check the fields agree with each other and with the format (sizes, index bits, tables,
unused tail bits zero, the stream used to its last byte and no further), decode, then compare
zlib.crc32 of the decoded bytes with `crc32`; any failure is one BadDataError line naming the format.
`stored_bytes` = stream + codebook + 2 * count + symbols bytes: what a device keeps in flash (the header
is not counted: on a device it is the op table's integers). `to_bytes`/`from_bytes`: a 28-byte
little-endian header (`HEADER`: magic b"HARW", version, format, bits, 0, n, stream bytes, stream bits,
crc32, k, n_symbols), then stream, codebook, count (huffman only), symbols; `from_bytes` refuses a wrong
magic, version or size, truncation and a CRC mismatch (it decodes).
`best_format(values)`: the format with the fewest stored bytes (ties: dense, palette, bitmask, huffman
in that order); Huffman over values, never over indices (same code lengths, plus a k-byte codebook).
Limits: n < 2**32 and n_symbols <= 256 by the header; no choice of format for a caller (that is theirs).
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from har.errors import BadDataError, BadOptionError
from model_opts.compress import bitmask, huffman, palette

FORMATS = ("dense", "palette", "huffman", "bitmask")
FORMAT_CODES = {"dense": 0, "palette": 1, "huffman": 2, "bitmask": 3}  # palette/huffman/bitmask = har_decode_op i[0]
MAGIC = b"HARW"
VERSION = 1
HEADER = struct.Struct("<4sBBBBIIIIHH")
COUNT_BYTES = (huffman.MAX_LENGTH + 1) * 2


def _ro(a: np.ndarray, dtype) -> np.ndarray:
    a = np.array(a, dtype=dtype).reshape(-1)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class EncodedLayer:
    format: str
    n: int
    stream: bytes
    bits: int = 0  # palette / huffman over indices: index bits; else 0
    codebook: np.ndarray = field(default_factory=lambda: _ro([], np.int8))
    count: np.ndarray = field(default_factory=lambda: _ro([], np.uint16))  # huffman: (16,)
    symbols: np.ndarray = field(default_factory=lambda: _ro([], np.uint8))  # huffman only
    n_stream_bits: int = 0
    crc32: int = 0

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise BadDataError(f"unknown weight format {self.format!r}; one of {', '.join(FORMATS)}")
        object.__setattr__(self, "codebook", _ro(self.codebook, np.int8))
        object.__setattr__(self, "count", _ro(self.count, np.uint16))
        object.__setattr__(self, "symbols", _ro(self.symbols, np.uint8))
        object.__setattr__(self, "stream", bytes(self.stream))


def _check_values(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values)
    if v.dtype != np.int8 or v.ndim != 1 or v.size < 1:
        raise BadDataError(f"weights to store must be a non-empty 1-D int8 array, got {v.dtype} {v.shape}")
    return v


def encode(values: np.ndarray, format: str, *, over_indices: bool = False) -> EncodedLayer:
    """`values` in `format` (see the module docstring); BadDataError if a palette cannot hold them."""
    v = _check_values(values)
    if format not in FORMATS:
        raise BadOptionError(f"unknown weight format {format!r}; choose one of {', '.join(FORMATS)}")
    if over_indices and format != "huffman":
        raise BadOptionError("over_indices applies to the huffman format only")
    crc = zlib.crc32(v.tobytes())
    n = int(v.size)
    if format == "dense":
        return EncodedLayer("dense", n, v.tobytes(), n_stream_bits=8 * n, crc32=crc)
    if format == "bitmask":
        nnz = int(np.count_nonzero(v))
        return EncodedLayer("bitmask", n, bitmask.encode_bitmask(v), n_stream_bits=n + 8 * nnz, crc32=crc)
    if format == "palette" or over_indices:
        codebook, indices = palette.build_codebook(v)
        bits = palette.index_bits(codebook.size)
        if format == "palette":
            return EncodedLayer("palette", n, palette.pack_indices(indices, bits), bits, codebook,
                                n_stream_bits=n * bits, crc32=crc)
        code = huffman.HuffmanCode.fit(indices, codebook.size)
        stream, n_bits = huffman.encode(code, indices)
        return EncodedLayer("huffman", n, stream, bits, codebook, code.count, code.symbols, n_bits, crc)
    symbols = v.view(np.uint8)
    code = huffman.HuffmanCode.fit(symbols, huffman.MAX_ALPHABET)
    stream, n_bits = huffman.encode(code, symbols)
    return EncodedLayer("huffman", n, stream, 0, count=code.count, symbols=code.symbols, n_stream_bits=n_bits,
                        crc32=crc)


def _fail(layer: EncodedLayer, why: str) -> None:
    raise BadDataError(f"{layer.format} layer of {layer.n} weights: {why}")


def _check_stream(layer: EncodedLayer, n_bits: int) -> None:
    """The stream holds exactly `n_bits` bits (whole bytes) and they match the recorded count; tail zero."""
    if layer.n_stream_bits != n_bits:
        _fail(layer, f"records {layer.n_stream_bits} stream bits, its contents need {n_bits}")
    want = (n_bits + 7) // 8
    if len(layer.stream) != want:
        _fail(layer, f"stream of {len(layer.stream)} bytes, expected {want} (truncated or padded)")
    if n_bits % 8 and layer.stream[-1] >> (n_bits % 8):
        _fail(layer, "unused tail bits of the stream are not zero")


def _decode_checked(layer: EncodedLayer) -> np.ndarray:
    n, k = layer.n, int(layer.codebook.size)
    if n < 1:
        _fail(layer, "a layer needs at least one weight")
    if layer.format in ("dense", "bitmask") and (layer.bits or k or layer.count.size or layer.symbols.size):
        _fail(layer, "carries a codebook, index bits or Huffman tables it has no use for")
    if layer.format == "dense":
        _check_stream(layer, 8 * n)
        return np.frombuffer(layer.stream, np.int8).copy()
    if layer.format == "bitmask":
        out = bitmask.decode_bitmask(layer.stream, n)
        nnz = int(np.count_nonzero(out))
        mask = np.frombuffer(layer.stream, np.uint8, bitmask.mask_bytes(n))
        if int(np.unpackbits(mask).sum()) != nnz:
            _fail(layer, "mask marks a zero value as present or sets bits past n")
        if len(layer.stream) != bitmask.mask_bytes(n) + nnz or layer.n_stream_bits != n + 8 * nnz:
            _fail(layer, f"stream of {len(layer.stream)} bytes / {layer.n_stream_bits} bits, mask and {nnz} "
                         f"values need {bitmask.mask_bytes(n) + nnz} / {n + 8 * nnz}")
        return out
    if k and (k > 256 or np.any(np.diff(layer.codebook.astype(np.int16)) <= 0)):
        _fail(layer, "codebook is not strictly ascending")
    if k and layer.bits != palette.index_bits(k):
        _fail(layer, f"{layer.bits} index bits for a codebook of {k} (expected {palette.index_bits(k)})")
    if layer.format == "palette":
        if not 1 <= k <= palette.MAX_K or layer.count.size or layer.symbols.size:
            _fail(layer, f"needs a codebook of 1..{palette.MAX_K} entries and no Huffman tables (has {k})")
        _check_stream(layer, n * layer.bits)
        return palette.decode_palette(layer.stream, layer.bits, layer.codebook, n)
    if not k and layer.bits:
        _fail(layer, "huffman over values carries index bits")
    code = huffman.HuffmanCode.from_tables(layer.count, layer.symbols, k or huffman.MAX_ALPHABET)
    symbols, used = huffman.decode_bits(code, layer.stream, n)
    _check_stream(layer, used)
    return layer.codebook[symbols] if k else symbols.view(np.int8)


def decode(layer: EncodedLayer) -> np.ndarray:
    """The stored int8 values (steps in the module docstring); BadDataError (one line) when inconsistent."""
    out = _decode_checked(layer)
    if zlib.crc32(out.tobytes()) != layer.crc32:
        _fail(layer, f"CRC mismatch (stored {layer.crc32:#010x}, decoded {zlib.crc32(out.tobytes()):#010x})")
    return out


def stored_bytes(layer: EncodedLayer) -> int:
    """Bytes a device stores for the layer: stream + codebook + count (2 each) + symbols."""
    return len(layer.stream) + int(layer.codebook.size) + 2 * int(layer.count.size) + int(layer.symbols.size)


def bits_per_weight(layer: EncodedLayer) -> float:
    """Stream bits per weight (tables excluded)."""
    return layer.n_stream_bits / layer.n


def entropy_bits_per_weight(layer: EncodedLayer) -> float:
    """Entropy bound of the layer's symbols (bits/weight): no symbol-by-symbol code of these weights can
    average fewer stream bits; a Huffman layer's `bits_per_weight` is within 1 bit above it. The same for
    values and palette indices (the codebook is a bijection)."""
    return huffman.entropy_bits(decode(layer).view(np.uint8))


def best_format(values: np.ndarray) -> str:
    """The format of fewest `stored_bytes` (ties: the earlier of dense, palette, bitmask, huffman)."""
    v = _check_values(values)
    sizes = []
    for fmt in ("dense", "palette", "bitmask", "huffman"):
        if fmt == "palette" and np.unique(v).size > palette.MAX_K:
            continue
        sizes.append((stored_bytes(encode(v, fmt)), len(sizes), fmt))
    return min(sizes)[2]


def to_bytes(layer: EncodedLayer) -> bytes:
    """The layer as a self-describing byte string (header layout in the module docstring)."""
    head = HEADER.pack(MAGIC, VERSION, FORMAT_CODES[layer.format], layer.bits, 0, layer.n, len(layer.stream),
                       layer.n_stream_bits, layer.crc32, layer.codebook.size, layer.symbols.size)
    count = layer.count.astype("<u2").tobytes() if layer.format == "huffman" else b""
    return head + layer.stream + layer.codebook.tobytes() + count + layer.symbols.tobytes()


def from_bytes(data: bytes) -> EncodedLayer:
    """The layer `to_bytes` wrote; BadDataError for a wrong magic/version/size, truncation or bad CRC."""
    data = bytes(data)
    if len(data) < HEADER.size:
        raise BadDataError(f"weight record truncated: {len(data)} bytes, the header alone is {HEADER.size}")
    magic, version, fmt, bits, reserved, n, n_stream, n_bits, crc, k, n_sym = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise BadDataError(f"not a weight record: magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION or reserved:
        raise BadDataError(f"weight record version {version} (reserved {reserved}); this reader knows {VERSION}")
    names = {c: f for f, c in FORMAT_CODES.items()}
    if fmt not in names:
        raise BadDataError(f"weight record of unknown format code {fmt}")
    n_count = COUNT_BYTES if names[fmt] == "huffman" else 0
    want = HEADER.size + n_stream + k + n_count + n_sym
    if len(data) != want:
        raise BadDataError(f"weight record of {len(data)} bytes, its header announces {want} "
                           f"({'truncated' if len(data) < want else 'trailing bytes'})")
    at = HEADER.size
    stream, at = data[at:at + n_stream], at + n_stream
    codebook, at = np.frombuffer(data, np.int8, k, at), at + k
    count = np.frombuffer(data, "<u2", n_count // 2, at).astype(np.uint16)
    symbols = np.frombuffer(data, np.uint8, n_sym, at + n_count)
    layer = EncodedLayer(names[fmt], n, stream, bits, codebook, count, symbols, n_bits, crc)
    decode(layer)
    return layer
