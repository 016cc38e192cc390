"""Weight storage formats (model_opts/compress): exact round trips, the specified bit orders on hand-checkable
examples, RFC 1951 canonical codes, Huffman within 1 bit of the entropy, length limiting, and refusal of
corrupted or truncated streams and records."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from har.errors import BadDataError, BadOptionError
from model_opts.compress import bitmask, huffman, layer, palette

LAYER_SIZES = (1, 7, 8, 9, 1000)


def laplacian(n: int, scale: float, seed: int) -> np.ndarray:
    """Real-looking quantised weights: Laplacian, rounded and clipped to int8."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.laplace(0.0, scale, n)), -128, 127).astype(np.int8)


def few_values(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    levels = rng.choice(np.arange(-128, 128), size=k, replace=False)
    return levels[rng.integers(0, k, n)].astype(np.int8)


CASES = [("dense", False), ("bitmask", False), ("huffman", False), ("palette", False), ("huffman", True)]


@pytest.mark.parametrize("fmt, over_indices", CASES)
@pytest.mark.parametrize("n", LAYER_SIZES)
def test_every_format_round_trips(fmt: str, over_indices: bool, n: int):
    clusterable = fmt == "palette" or over_indices
    arrays = [few_values(n, 16, n), few_values(n, 1, n + 1), laplacian(n, 2.0, n)] if clusterable else \
        [np.random.default_rng(n).integers(-128, 128, n).astype(np.int8), laplacian(n, 6.0, n),
         np.zeros(n, np.int8)]
    if clusterable:
        arrays[2] = np.clip(arrays[2], -8, 7).astype(np.int8)
    for values in arrays:
        enc = layer.encode(values, fmt, over_indices=over_indices)
        assert np.array_equal(layer.decode(enc), values)
        again = layer.from_bytes(layer.to_bytes(enc))
        assert np.array_equal(layer.decode(again), values)
        assert layer.to_bytes(again) == layer.to_bytes(enc)
        assert layer.stored_bytes(enc) == len(enc.stream) + enc.codebook.size + 2 * enc.count.size + enc.symbols.size


def test_palette_bit_order_by_hand():
    # indices 1,2,3,4,5 at 3 bits, LSB first: stream bits 100 010 110 001 101 (+ a zero pad bit)
    # byte 0 = bits 0..7 = 1,0,0,0,1,0,1,1 -> 0b11010001; byte 1 = bits 8..15 = 0,0,0,1,1,0,1,0 -> 0b01011000
    assert palette.pack_indices(np.array([1, 2, 3, 4, 5], np.uint8), 3) == bytes([0b11010001, 0b01011000])
    assert np.array_equal(palette.unpack_indices(bytes([0b11010001, 0b01011000]), 3, 5), [1, 2, 3, 4, 5])


def slow_pack(indices, bits) -> bytes:
    """The spec read literally: index j's bit i is stream bit j*bits + i, stream bit b = bit b%8 of byte b//8."""
    out = bytearray((len(indices) * bits + 7) // 8)
    for j, idx in enumerate(indices):
        for i in range(bits):
            b = j * bits + i
            out[b // 8] |= ((int(idx) >> i) & 1) << (b % 8)
    return bytes(out)


@pytest.mark.parametrize("bits", range(1, 9))
def test_vectorised_packing_matches_the_spec_read_literally(bits: int):
    idx = np.random.default_rng(bits).integers(0, 1 << bits, 37).astype(np.uint8)
    assert palette.pack_indices(idx, bits) == slow_pack(idx, bits)
    assert np.array_equal(palette.unpack_indices(slow_pack(idx, bits), bits, idx.size), idx)


def test_bitmask_layout_by_hand():
    values = np.array([0, 5, 0, 0, 0, 0, 0, 0, -1], np.int8)
    # mask bits: value 1 -> byte 0 bit 1; value 8 -> byte 1 bit 0; then 5 and -1 (0xff) as int8
    assert bitmask.encode_bitmask(values) == bytes([0b10, 0b1, 5, 0xFF])
    assert np.array_equal(bitmask.decode_bitmask(bytes([0b10, 0b1, 5, 0xFF]), 9), values)


RFC_LENGTHS = np.array([3, 3, 3, 3, 3, 2, 4, 4])  # RFC 1951 3.2.2: A..H


def test_canonical_codes_are_rfc1951s_example():
    code = huffman.HuffmanCode.from_lengths(RFC_LENGTHS)
    # the RFC's table: A 010, B 011, C 100, D 101, E 110, F 00, G 1110, H 1111
    assert [format(int(c), f"0{int(n)}b") for c, n in zip(code.codes(), RFC_LENGTHS)] == \
        ["010", "011", "100", "101", "110", "00", "1110", "1111"]
    assert list(code.count[:5]) == [0, 0, 1, 5, 2] and not code.count[5:].any()
    assert list(code.symbols) == [5, 0, 1, 2, 3, 4, 6, 7]  # by length, then value
    # a code is written MSB first into the LSB-first stream: A = 010 -> bits 0,1,0 -> byte 0b010
    assert huffman.encode(code, np.array([0])) == (bytes([0b010]), 3)
    assert huffman.encode(code, np.array([6])) == (bytes([0b0111]), 4)  # G = 1110 -> bits 1,1,1,0
    assert huffman.encode(code, np.array([5, 0])) == (bytes([0b01000]), 5)  # F A = 00 010
    assert np.array_equal(huffman.decode(code, bytes([0b01000]), 2), [5, 0])


def kraft(lengths) -> float:
    ln = np.asarray(lengths, dtype=np.float64)
    return float(np.sum(np.where(ln > 0, 2.0 ** -ln, 0.0)))


@pytest.mark.parametrize("seed", range(4))
def test_fitted_codes_are_complete_canonical_prefix_codes(seed: int):
    values = laplacian(3000, 1.5 + seed, seed)
    code = huffman.HuffmanCode.fit(values.view(np.uint8), 256)
    used = np.flatnonzero(code.lengths)
    assert set(used) == set(np.unique(values.view(np.uint8)))
    assert kraft(code.lengths) == 1.0  # Huffman codes are complete
    ln = code.lengths[code.symbols].astype(int)
    assert np.all(np.diff(ln) >= 0) and all(np.diff(code.symbols[ln == L].astype(int)).min(initial=1) > 0
                                            for L in np.unique(ln))
    words = [format(int(code.codes()[s]), f"0{int(code.lengths[s])}b") for s in used]
    assert not any(a != b and b.startswith(a) for a in words for b in words)  # prefix-free
    again = huffman.HuffmanCode.from_tables(code.count, code.symbols, 256)
    assert np.array_equal(again.lengths, code.lengths)


def test_huffman_rate_is_within_one_bit_of_the_entropy():
    for scale in (0.7, 3.0, 20.0):
        values = laplacian(60_000, scale, 11)
        enc = layer.encode(values, "huffman")
        h = huffman.entropy_bits(values.view(np.uint8))
        assert h <= layer.bits_per_weight(enc) < h + 1
        assert layer.entropy_bits_per_weight(enc) == pytest.approx(h)
        indices = layer.encode(np.clip(values, -8, 7).astype(np.int8), "huffman", over_indices=True)
        hi = layer.entropy_bits_per_weight(indices)
        assert hi <= layer.bits_per_weight(indices) < hi + 1


def test_single_symbol_layers_get_a_one_bit_code():
    for v in (0, -128, 127):
        enc = layer.encode(np.full(13, v, np.int8), "huffman")
        assert enc.n_stream_bits == 13 and list(enc.symbols) == [v & 0xFF] and enc.count[1] == 1


def fibonacci(m: int) -> np.ndarray:
    f = [1, 1]
    while len(f) < m:
        f.append(f[-1] + f[-2])
    return np.array(f)


def cost_bits(freqs, lengths) -> int:
    return int(np.sum(np.asarray(freqs, np.int64) * np.asarray(lengths, np.int64)))


def test_length_limiting_a_fibonacci_distribution():
    freqs = fibonacci(22)
    free = huffman.code_lengths(freqs, max_length=64)
    assert free.max() > 15  # the optimal unlimited code needs 21 bits
    limited = huffman.code_lengths(freqs)
    assert limited.max() <= 15 and kraft(limited) <= 1.0
    # limiting costs bits (never fewer than the free code) but stays below a fixed-length code
    assert cost_bits(freqs, free) <= cost_bits(freqs, limited)
    five = np.full(freqs.size, 5)  # a fixed-length 5-bit code for 22 symbols
    assert cost_bits(freqs, limited) <= cost_bits(freqs, five)
    symbols = np.repeat(np.arange(freqs.size), freqs)
    code = huffman.HuffmanCode.fit(symbols, 256)
    assert np.array_equal(code.lengths[:freqs.size], limited)
    stream, n_bits = huffman.encode(code, symbols)
    assert n_bits == cost_bits(freqs, limited)
    assert np.array_equal(huffman.decode(code, stream, symbols.size), symbols)


@pytest.mark.parametrize("seed", range(6))
def test_package_merge_is_optimal_when_the_limit_does_not_bind(seed: int):
    rng = np.random.default_rng(seed)
    w = [int(x) for x in rng.integers(1, 1000, rng.integers(2, 60))]
    free = huffman._huffman_lengths(w)
    merged = huffman._package_merge(w, max(free))
    assert cost_bits(w, merged) == cost_bits(w, free) and kraft(merged) <= 1.0
    tight = (len(w) - 1).bit_length()  # the shortest possible limit: near fixed-length
    pm = huffman._package_merge(w, tight)
    assert max(pm) <= tight and kraft(pm) <= 1.0 and cost_bits(w, pm) <= tight * sum(w)


def corruptions(enc: layer.EncodedLayer):
    s = enc.stream
    yield "truncated", dataclasses.replace(enc, stream=s[:-1])
    yield "padded", dataclasses.replace(enc, stream=s + b"\0")
    yield "flipped", dataclasses.replace(enc, stream=s[:-1] + bytes([s[-1] ^ 1]))
    yield "crc", dataclasses.replace(enc, crc32=enc.crc32 ^ 1)
    yield "n", dataclasses.replace(enc, n=enc.n + 1)
    yield "bits", dataclasses.replace(enc, n_stream_bits=enc.n_stream_bits - 1)


@pytest.mark.parametrize("fmt, over_indices", CASES)
def test_corrupted_layers_are_refused_in_one_line(fmt: str, over_indices: bool):
    values = np.clip(laplacian(203, 2.0, 3), -8, 7).astype(np.int8)
    enc = layer.encode(values, fmt, over_indices=over_indices)
    for what, bad in corruptions(enc):
        with pytest.raises(BadDataError) as e:
            layer.decode(bad)
        assert "\n" not in str(e.value), what


@pytest.mark.parametrize("fmt, over_indices", CASES)
def test_from_bytes_refuses_damaged_records(fmt: str, over_indices: bool):
    values = np.clip(laplacian(203, 2.0, 4), -8, 7).astype(np.int8)
    good = layer.to_bytes(layer.encode(values, fmt, over_indices=over_indices))
    bad = {"magic": b"HARX" + good[4:], "version": good[:4] + b"\x02" + good[5:], "truncated": good[:-1],
           "trailing": good + b"\0", "header only": good[:layer.HEADER.size], "empty": b""}
    flipped = bytearray(good)
    flipped[layer.HEADER.size] ^= 0x10  # the stream's first byte: a CRC mismatch or a broken stream
    bad["payload"] = bytes(flipped)
    for what, data in bad.items():
        with pytest.raises(BadDataError) as e:
            layer.from_bytes(data)
        assert "\n" not in str(e.value), what


def test_huffman_decoder_refuses_exhausted_and_invalid_streams():
    code = huffman.HuffmanCode.from_lengths(np.array([1, 0, 0]))  # incomplete: only "0" is a code
    assert np.array_equal(huffman.decode(code, b"\0", 8), np.zeros(8))
    with pytest.raises(BadDataError, match="exhausted"):
        huffman.decode(code, b"\0", 9)
    with pytest.raises(BadDataError, match="no valid code"):
        huffman.decode(code, b"\x01", 1)
    with pytest.raises(BadDataError, match="over-subscribe"):
        huffman.HuffmanCode.from_lengths(np.array([1, 1, 1]))
    with pytest.raises(BadDataError, match="canonical"):
        huffman.HuffmanCode.from_tables(np.array([0, 2] + [0] * 14), np.array([1, 0]), 2)


def test_encoding_is_deterministic():
    values = laplacian(5000, 3.0, 9)
    for fmt, over in CASES:
        v = np.clip(values, -8, 7).astype(np.int8) if fmt == "palette" or over else values
        assert layer.to_bytes(layer.encode(v, fmt, over_indices=over)) == \
            layer.to_bytes(layer.encode(v.copy(), fmt, over_indices=over))


def test_best_format_is_the_smallest_with_the_documented_tie_order():
    order = ("dense", "palette", "bitmask", "huffman")
    for values in (laplacian(4000, 8.0, 1), np.clip(laplacian(4000, 1.0, 2), -8, 7).astype(np.int8),
                   np.zeros(1000, np.int8), np.random.default_rng(3).integers(-128, 128, 500).astype(np.int8),
                   np.array([3], np.int8)):
        sizes = {}
        for fmt in order:
            try:
                sizes[fmt] = layer.stored_bytes(layer.encode(values, fmt))
            except BadDataError:  # more than 16 distinct values: no palette
                pass
        smallest = min(sizes.values())
        assert layer.best_format(values) == next(f for f in order if sizes.get(f) == smallest)


def test_bad_inputs_and_options_are_refused():
    with pytest.raises(BadDataError, match="at most 16"):
        layer.encode(np.arange(17, dtype=np.int8), "palette")
    with pytest.raises(BadOptionError):
        layer.encode(np.zeros(4, np.int8), "zip")
    with pytest.raises(BadOptionError):
        layer.encode(np.zeros(4, np.int8), "palette", over_indices=True)
    with pytest.raises(BadDataError):
        layer.encode(np.zeros(4, np.int16), "dense")
    with pytest.raises(BadDataError):
        layer.encode(np.zeros(0, np.int8), "dense")
