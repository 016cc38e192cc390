"""Canonical Huffman coding of one layer's symbols (Deep Compression's last stage), as a device decodes it.

Symbols are the int8 weights as uint8 (alphabet 256) or palette indices (alphabet k).
Steps of `HuffmanCode.fit(symbols, alphabet)`:
1. Count each symbol (`np.bincount`). One distinct symbol gets a 1-bit code (the code "0"; "1" is unused).
2. Otherwise optimal code lengths by Huffman's algorithm on a `heapq` min-heap of (weight, tie id)
   entries; ties go to the lower id (leaves are numbered by symbol value, merged nodes after them), so
   the same counts always give the same lengths.
3. Length limit `MAX_LENGTH` = 15: if the Huffman code is longer, the lengths are recomputed with the
   package-merge algorithm (Larmore & Hirschberg 1990), which gives an optimal code among all codes whose
   lengths are <= 15 (not a heuristic): 14 rounds of pairing the cheapest items and merging the pairs with
   the leaves, then each symbol's length = how often it occurs in the 2m - 2 cheapest items.
4. Canonical codes exactly as RFC 1951 section 3.2.2: `count[L]` symbols of each length, the first code
   of length L = (first code of L-1 + count[L-1]) << 1, and codes within one length by symbol value.
   Decoder tables: `count` uint16[16] (count[0] = 0) and `symbols` (the used symbols by length, then value).
`encode` writes each code starting with its most significant bit into an LSB-first bit stream (stream bit
b = bit b % 8 of byte b // 8), as DEFLATE does; vectorised with a (n, 15) bit matrix and `np.packbits`.
`decode` reads the next 15 stream bits at every bit position at once (numpy), looks each window up in a
2**15-entry table (symbol, length), then follows the chain of code starts (one Python step per symbol).
It refuses a stream that ends inside a code and a bit pattern that is no code (the code may be incomplete:
single-symbol layers). `entropy_bits` is the Shannon entropy of the empirical distribution (bits/symbol):
the lower bound any symbol-by-symbol code meets, and a Huffman code is less than 1 bit above it.
Why by hand: numpy/scipy/scikit-learn have no Huffman coder, and general Huffman packages neither emit
DEFLATE's canonical tables nor limit lengths; `heapq` and numpy do the heavy lifting here.
Limits: alphabet <= 256; the decoder takes ~35 ms per 65,535 symbols (the chain walk is sequential).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from har.errors import BadDataError

MAX_LENGTH = 15
MAX_ALPHABET = 256


def _huffman_lengths(weights: list[int]) -> list[int]:
    """Step 2: unlimited Huffman code lengths of m >= 2 positive weights."""
    heap = [(w, i) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    parent = [-1] * len(weights)
    while len(heap) > 1:
        (w1, a), (w2, b) = heapq.heappop(heap), heapq.heappop(heap)
        node = len(parent)
        parent.append(-1)
        parent[a] = parent[b] = node
        heapq.heappush(heap, (w1 + w2, node))
    depth = [0] * len(parent)
    for node in range(len(parent) - 2, -1, -1):  # parents are numbered after their children
        depth[node] = depth[parent[node]] + 1
    return depth[:len(weights)]


def _package_merge(weights: list[int], max_length: int) -> list[int]:
    """Step 3: optimal code lengths <= max_length of m >= 2 positive weights (m <= 2**max_length)."""
    m = len(weights)
    eye = np.eye(m, dtype=np.int64)
    leaves = sorted(((w, i, eye[i]) for i, w in enumerate(weights)), key=lambda t: (t[0], t[1]))
    leaves = [(w, c) for w, _, c in leaves]
    items = leaves
    for _ in range(max_length - 1):
        packages = [(items[j][0] + items[j + 1][0], items[j][1] + items[j + 1][1]) for j in range(0, len(items) - 1, 2)]
        items = list(heapq.merge(leaves, packages, key=lambda t: t[0]))  # stable: leaves first on ties
    return [int(x) for x in np.sum([c for _, c in items[:2 * m - 2]], axis=0)]


def code_lengths(freqs: np.ndarray, max_length: int = MAX_LENGTH) -> np.ndarray:
    """Code length per symbol (0 for an unused one) of an optimal prefix code with lengths <= max_length."""
    f = np.asarray(freqs, dtype=np.int64)
    used = np.flatnonzero(f > 0)
    lengths = np.zeros(f.size, dtype=np.int64)
    if used.size == 0:
        raise BadDataError("a Huffman code needs at least one symbol")
    if used.size > 1 << max_length:
        raise BadDataError(f"{used.size} symbols do not fit codes of at most {max_length} bits")
    if used.size == 1:
        lengths[used] = 1
        return lengths
    w = [int(x) for x in f[used]]
    got = _huffman_lengths(w)
    if max(got) > max_length:
        got = _package_merge(w, max_length)
    lengths[used] = got
    return lengths


@dataclass(frozen=True, eq=False)
class HuffmanCode:
    """A canonical code: `lengths` uint8 (alphabet,), decoder tables `count` uint16 (16,), `symbols` uint8."""
    lengths: np.ndarray
    count: np.ndarray
    symbols: np.ndarray

    @property
    def alphabet(self) -> int:
        return int(self.lengths.size)

    @classmethod
    def from_lengths(cls, lengths: np.ndarray) -> "HuffmanCode":
        """The canonical code of given lengths (0 = unused); BadDataError unless a usable prefix code."""
        ln = np.asarray(lengths, dtype=np.int64)
        if ln.ndim != 1 or not 1 <= ln.size <= MAX_ALPHABET or ln.min() < 0 or ln.max() > MAX_LENGTH:
            raise BadDataError(f"Huffman lengths must be 1..{MAX_ALPHABET} values in 0..{MAX_LENGTH}")
        count = np.bincount(ln, minlength=MAX_LENGTH + 1).astype(np.int64)
        count[0] = 0
        if count.sum() == 0:
            raise BadDataError("a Huffman code needs at least one symbol")
        kraft = int(np.sum(count[1:] << (MAX_LENGTH - np.arange(1, MAX_LENGTH + 1))))
        if kraft > 1 << MAX_LENGTH:
            raise BadDataError("Huffman lengths over-subscribe the code space (not a prefix code)")
        used = np.flatnonzero(ln > 0)
        symbols = used[np.lexsort((used, ln[used]))]  # by length, then value
        return cls(_frozen(ln.astype(np.uint8)), _frozen(count.astype(np.uint16)), _frozen(symbols.astype(np.uint8)))

    @classmethod
    def from_tables(cls, count: np.ndarray, symbols: np.ndarray, alphabet: int) -> "HuffmanCode":
        """The code a decoder's tables describe; BadDataError unless they are canonical and consistent."""
        c = np.asarray(count, dtype=np.int64)
        s = np.asarray(symbols, dtype=np.int64)
        if c.shape != (MAX_LENGTH + 1,) or c[0] != 0 or c.sum() != s.size or s.ndim != 1:
            raise BadDataError(f"Huffman tables inconsistent: count sums to {int(c.sum())}, {s.size} symbols")
        if not 1 <= alphabet <= MAX_ALPHABET or (s.size and (s.min() < 0 or s.max() >= alphabet)):
            raise BadDataError(f"Huffman symbols outside the alphabet of {alphabet}")
        if np.unique(s).size != s.size:
            raise BadDataError("Huffman symbol table repeats a symbol")
        lengths = np.zeros(alphabet, dtype=np.int64)
        lengths[s] = np.repeat(np.arange(MAX_LENGTH + 1), c)
        code = cls.from_lengths(lengths)
        if not np.array_equal(code.symbols, s):
            raise BadDataError("Huffman symbol table is not in canonical order (by length, then value)")
        return code

    @classmethod
    def fit(cls, symbols: np.ndarray, alphabet: int) -> "HuffmanCode":
        """Steps 1-4 of the module docstring for the given symbols (values in [0, alphabet))."""
        s = _check_symbols(symbols, alphabet)
        if s.size == 0:
            raise BadDataError("cannot fit a Huffman code to zero symbols")
        return cls.from_lengths(code_lengths(np.bincount(s, minlength=alphabet)))

    def codes(self) -> np.ndarray:
        """Canonical code value per symbol (RFC 1951 3.2.2; 0 for unused symbols), int64 (alphabet,)."""
        ln = self.lengths.astype(np.int64)
        count = self.count.astype(np.int64)
        next_code = np.zeros(MAX_LENGTH + 1, dtype=np.int64)
        code = 0
        for bits in range(1, MAX_LENGTH + 1):
            code = (code + count[bits - 1]) << 1
            next_code[bits] = code
        out = np.zeros(ln.size, dtype=np.int64)
        for sym in self.symbols.astype(np.int64):  # canonical order = increasing code within each length
            out[sym] = next_code[ln[sym]]
            next_code[ln[sym]] += 1
        return out


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def _check_symbols(symbols: np.ndarray, alphabet: int) -> np.ndarray:
    s = np.asarray(symbols)
    if s.ndim != 1 or s.dtype.kind not in "ui":
        raise BadDataError(f"Huffman symbols must be a 1-D integer array, got {s.dtype} with shape {s.shape}")
    if not 1 <= alphabet <= MAX_ALPHABET:
        raise BadDataError(f"Huffman alphabet must be 1..{MAX_ALPHABET}, got {alphabet}")
    s = s.astype(np.int64)
    if s.size and (s.min() < 0 or s.max() >= alphabet):
        raise BadDataError(f"Huffman symbols outside [0, {alphabet})")
    return s


def encode(code: HuffmanCode, symbols: np.ndarray) -> tuple[bytes, int]:
    """(stream, n_bits): the codes of `symbols`, MSB of each code first, LSB-first bit stream."""
    s = _check_symbols(symbols, code.alphabet)
    ln = code.lengths.astype(np.int64)[s]
    if ln.size and ln.min() == 0:
        raise BadDataError("a symbol to encode has no code in this Huffman code")
    cv = code.codes()[s]
    pos = np.arange(MAX_LENGTH, dtype=np.int64)
    keep = pos[None, :] < ln[:, None]  # bit i of a row is the code's bit (length - 1 - i)
    shift = np.where(keep, ln[:, None] - 1 - pos[None, :], 0)
    bits = ((cv[:, None] >> shift) & 1)[keep].astype(np.uint8)  # row-major: stream order
    return np.packbits(bits, bitorder="little").tobytes(), int(bits.size)


def _table(code: HuffmanCode) -> tuple[np.ndarray, np.ndarray]:
    """(symbol, length) for every 15-bit window read MSB-first; length 0 = no code starts so."""
    sym = np.zeros(1 << MAX_LENGTH, dtype=np.int64)
    length = np.zeros(1 << MAX_LENGTH, dtype=np.int64)
    codes = code.codes()
    for s in code.symbols.astype(np.int64):
        span = MAX_LENGTH - int(code.lengths[s])
        lo = int(codes[s]) << span
        sym[lo:lo + (1 << span)] = s
        length[lo:lo + (1 << span)] = code.lengths[s]
    return sym, length


def decode_bits(code: HuffmanCode, data: bytes, n: int) -> tuple[np.ndarray, int]:
    """(n symbols as uint8, stream bits they used); see `decode`."""
    if n < 0:
        raise BadDataError(f"cannot decode {n} symbols")
    bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little").astype(np.int64)
    nb = bits.size
    padded = np.concatenate([bits, np.zeros(MAX_LENGTH, dtype=np.int64)])
    window = np.zeros(nb, dtype=np.int64)
    for i in range(MAX_LENGTH):
        window |= padded[i:i + nb] << (MAX_LENGTH - 1 - i)
    tsym, tlen = _table(code)
    lens = tlen[window].tolist()
    starts = []
    pos = 0
    for _ in range(n):
        if pos >= nb:
            raise BadDataError(f"Huffman stream exhausted after {len(starts)} of {n} symbols")
        step = lens[pos]
        if step == 0:
            raise BadDataError(f"Huffman stream holds no valid code at bit {pos}")
        if pos + step > nb:
            raise BadDataError(f"Huffman stream ends inside a code (symbol {len(starts)} of {n})")
        starts.append(pos)
        pos += step
    out = tsym[window[np.asarray(starts, dtype=np.int64)]] if starts else np.zeros(0, np.int64)
    return out.astype(np.uint8), pos


def decode(code: HuffmanCode, data: bytes, n: int) -> np.ndarray:
    """The first n symbols (uint8) of `data`; BadDataError for an exhausted stream or an invalid code."""
    return decode_bits(code, data, n)[0]


def entropy_bits(symbols: np.ndarray) -> float:
    """Shannon entropy (bits per symbol) of the symbols' empirical distribution; 0.0 for one symbol."""
    s = np.asarray(symbols).reshape(-1)
    if s.size == 0:
        raise BadDataError("entropy of zero symbols")
    _, counts = np.unique(s, return_counts=True)
    p = counts / s.size
    return float(max(0.0, -np.sum(p * np.log2(p))))
