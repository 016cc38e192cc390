"""How a device stores each gemm layer's weights: dense int8, a compressed stream decoded into the arena
just before the layer runs, or CSR read directly by the sparse gemm.

`WeightStorage(format)` is the choice for a whole program; `layer_plan(values, dense_2d, storage, mode)`
turns it into one layer's `LayerStorage`:
- "dense": the int8 array as the gemm's loop order reads it (the im2col16 layout on Cortex-M4).
- "palette" (weight clustering), "huffman" (canonical Huffman of the int8 values), "huffman-palette"
  (Huffman of the palette indices) and "bitmask" (sparsity): the SAME array is encoded
  (`model_opts.compress.layer`) and stored in flash; a HAR_DECODE op (`har_decode.c`) rebuilds it into an
  arena slot of its own right before the gemm, so the gemm kernel and its loop order are unchanged. The
  planner sees the decoded weights as a tensor live for the gemm's op only. Flash: the encoding's saving,
  minus the decoder's code and one op record per decoded layer; RAM: up by the decoded slots, which the
  planner overlaps with what else is live (at most their sum); instructions: up by the decoding — each
  measured on the ELF and in emulation, never estimated.
- "palette-direct": the clustered layer's 4-bit indices and codebook stay in flash and the gemm's fifth
  loop order (HAR_GEMM_PALETTE4) reads `codebook[index]` term by term: flash down as for "palette", no
  arena slot and no decoder, more instructions per MAC than the dense orders. Encodes the dot-order matrix.
- "csr": the gemm's fourth loop order (HAR_GEMM_CSR) reads row pointers, column indices and nonzero values
  straight from flash: no arena slot, instructions proportional to the nonzeros. The dense (dot-order)
  matrix is encoded, so the layer runs the CSR order whatever the target's dense order is.
- "auto": per layer, the format with the fewest flash bytes among dense, palette (<= 16 distinct values),
  bitmask, huffman, huffman-palette (ties: that order), a decoded format charged its stream and tables plus
  its decode op's record (`OP_RECORD_BYTES`, the 32-bit `struct har_op`); the decoder's code (~0.6 KB,
  linked once when any layer decodes) is not charged per layer, so on a small model "dense" everywhere
  can still be the smaller firmware — the ELF figures say which; CSR and palette-direct are only taken when asked for,
  as they change the loop order and so the instructions, not only the bytes.
Limits: a palette needs <= 16 distinct values in the stored array (padding zeros included: clustering
pins a centroid at 0 for this reason); huffman's decoder tables cost 32 bytes + one per used symbol, so
it loses on small layers — "auto" sees that.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from har.errors import BadDataError, BadOptionError

FORMATS = ("dense", "palette", "palette-direct", "huffman", "huffman-palette", "bitmask", "csr", "auto")
DECODE_FORMAT_ID = {"palette": 1, "huffman": 2, "huffman-palette": 2, "bitmask": 3}  # har_decode.h i[0]
_AUTO_ORDER = ("dense", "palette", "bitmask", "huffman", "huffman-palette")
OP_RECORD_BYTES = 4 + 12 * 4 + 2 * 4 + 8 * 4  # one struct har_op on a 32-bit target (har_int8.h)


@dataclass(frozen=True)
class WeightStorage:
    format: str = "dense"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise BadOptionError(f"unknown weight storage {self.format!r}; choose one of {', '.join(FORMATS)}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LayerStorage:
    """One layer: its format and the arrays the weight blob stores for it (C suffix -> values)."""

    format: str
    arrays: tuple[tuple[str, np.ndarray], ...]
    n_values: int  # int8 weights the gemm reads (decoded size; dense: the stored array's size)
    stored_bytes: int
    ints: tuple[int, ...] = ()  # the HAR_DECODE op's i[0..5]; empty for dense and csr
    entropy_bits: float | None = None  # huffman: the Shannon bound of the coded symbols, bits per weight
    bits_per_weight: float | None = None

    @property
    def decodes(self) -> bool:
        return bool(self.ints)

    def to_dict(self) -> dict:
        return {"format": self.format, "n_values": self.n_values, "stored_bytes": self.stored_bytes,
                "entropy_bits": self.entropy_bits, "bits_per_weight": self.bits_per_weight}


def _encoded(values: np.ndarray, fmt: str) -> LayerStorage:
    from model_opts.compress import layer as codec
    over = fmt == "huffman-palette"
    enc = codec.encode(values, "huffman" if over else fmt, over_indices=over)
    if not np.array_equal(codec.decode(enc), values):  # the device must rebuild exactly what dense stores
        raise BadDataError(f"{fmt}: encoding does not round-trip")
    arrays = [("z", np.frombuffer(enc.stream, dtype=np.uint8).copy())]
    if len(enc.codebook):
        arrays.append(("codebook", np.asarray(enc.codebook, np.int8)))
    if fmt.startswith("huffman"):
        arrays += [("count", np.asarray(enc.count, np.uint16)), ("symbols", np.asarray(enc.symbols, np.uint8))]
    k = len(enc.codebook)
    ints = (DECODE_FORMAT_ID[fmt], int(values.size), len(enc.stream), int(enc.bits), len(enc.symbols), k)
    entropy = codec.entropy_bits_per_weight(enc) if fmt.startswith("huffman") else None
    return LayerStorage(fmt, tuple(arrays), int(values.size), int(codec.stored_bytes(enc)), ints, entropy,
                        float(codec.bits_per_weight(enc)))


def _csr(dense_2d: np.ndarray) -> LayerStorage:
    from model_opts import csr
    c = csr.encode_csr(dense_2d)
    if not np.array_equal(csr.decode_csr(c), dense_2d):
        raise BadDataError("csr: encoding does not round-trip")
    val, col = np.asarray(c.val, np.int8), np.asarray(c.col, np.uint16)
    if val.size == 0:  # an all-zero layer: C99 has no zero-length array; row_ptr (all 0) never reads this one
        val, col = np.zeros(1, np.int8), np.zeros(1, np.uint16)
    arrays = (("val", val), ("row_ptr", np.asarray(c.row_ptr, np.uint16)), ("col", col))
    return LayerStorage("csr", arrays, int(dense_2d.size), int(csr.csr_bytes(c)))


def _palette_direct(dense_2d: np.ndarray) -> LayerStorage:
    from model_opts.compress import palette
    codebook, index = palette.build_codebook(dense_2d.reshape(-1))
    z = np.frombuffer(palette.pack_indices(index, 4), dtype=np.uint8).copy()
    if not np.array_equal(codebook[palette.unpack_indices(z.tobytes(), 4, dense_2d.size)], dense_2d.reshape(-1)):
        raise BadDataError("palette-direct: encoding does not round-trip")
    return LayerStorage("palette-direct", (("z", z), ("codebook", np.asarray(codebook, np.int8))),
                        int(dense_2d.size), int(z.size + codebook.size), bits_per_weight=4.0)


def _palette_ok(values: np.ndarray) -> bool:
    return len(np.unique(values)) <= 16


def layer_plan(values: np.ndarray, dense_2d: np.ndarray, storage: WeightStorage) -> LayerStorage:
    """`values`: the int8 array as the target's dense loop order stores it (flat); `dense_2d`: the same
    weights as a (C_out, terms) dot-order matrix (what CSR encodes)."""
    fmt = storage.format
    dense = LayerStorage("dense", (("", values),), int(values.size), int(values.nbytes))
    if fmt == "dense":
        return dense
    if fmt == "csr":
        return _csr(dense_2d)
    if fmt in ("palette", "palette-direct", "huffman-palette") and not _palette_ok(values):
        raise BadDataError(f"{fmt}: a layer has {len(np.unique(values))} distinct weight values (a palette "
                           "holds at most 16; cluster the model first)")
    if fmt == "palette-direct":
        return _palette_direct(dense_2d)
    if fmt != "auto":
        return _encoded(values, fmt)
    options = [dense]
    for f in _AUTO_ORDER[1:]:
        if f in ("palette", "huffman-palette") and not _palette_ok(values):
            continue
        options.append(_encoded(values, f))
    return min(options, key=lambda s: (s.stored_bytes + OP_RECORD_BYTES * s.decodes, _AUTO_ORDER.index(s.format)))
