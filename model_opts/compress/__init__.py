"""Compressed storage of one layer's int8 weights: palette (weight clustering), canonical Huffman (Deep
Compression) and bitmask (sparsity), bit-exact with the freestanding C decoders in
system_opts/csrc/har_decode.c. Entry points: `layer.encode(values, format)`, `layer.decode(layer)`,
`layer.to_bytes` / `layer.from_bytes`, `layer.stored_bytes`, `layer.best_format`.
"""
from model_opts.compress.layer import (FORMATS, EncodedLayer, best_format, bits_per_weight, decode, encode,
                                       entropy_bits_per_weight, from_bytes, stored_bytes, to_bytes)

__all__ = ["FORMATS", "EncodedLayer", "best_format", "bits_per_weight", "decode", "encode",
           "entropy_bits_per_weight", "from_bytes", "stored_bytes", "to_bytes"]
