/* Decoders of har-memopt's compressed weight formats (har_decode.c): freestanding C99, no libc, no heap.
 * Every bit stream is LSB-first: stream bit b is bit (b % 8) of byte b / 8. The formats are specified in
 * model_opts/compress/ (palette.py, huffman.py, bitmask.py), the Python reference these decoders match. */
#ifndef HAR_DECODE_H
#define HAR_DECODE_H
#include <stdint.h>
#include "har_int8.h"

enum { HAR_FMT_PALETTE = 1, HAR_FMT_HUFFMAN = 2, HAR_FMT_BITMASK = 3 };
#define HAR_HUFFMAN_MAX_BITS 15

/* Each returns 0, or -1 for a malformed or exhausted stream; none reads past src + src_bytes or writes
 * past dst + n. On -1, dst[0..n) may be partly written. */

/* n indices of `bits` (1..8) bits, LSB first, mapped through codebook[0..k); an index >= k is malformed */
int har_decode_palette(const uint8_t *src, int32_t src_bytes, int32_t bits, const int8_t *codebook,
                       int32_t k, int8_t *dst, int32_t n);
/* n canonical Huffman codes (<= 15 bits, each MSB first); count[1..15] codes of each length, symbols[]
 * in canonical order (by length, then value). codebook NULL: a symbol is the int8 value (as uint8);
 * else dst = codebook[symbol] and a symbol >= k is malformed. Over-subscribed counts are malformed;
 * incomplete codes are allowed (an unassigned bit pattern is malformed). */
int har_decode_huffman(const uint8_t *src, int32_t src_bytes, const uint16_t *count, const uint8_t *symbols,
                       int32_t n_symbols, const int8_t *codebook, int32_t k, int8_t *dst, int32_t n);
/* ceil(n/8) mask bytes (bit j set: dst[j] is the next stored value), then the nonzero int8 values */
int har_decode_bitmask(const uint8_t *src, int32_t src_bytes, int8_t *dst, int32_t n);

/* op-table entry: i[0] format (HAR_FMT_*), i[1] n, i[2] src_bytes, i[3] bits, i[4] n_symbols, i[5] k;
 * p[0] src (const uint8_t *), p[1] dst (int8_t *), p[2] codebook (const int8_t *, or NULL),
 * p[3] count (const uint16_t *), p[4] symbols (const uint8_t *). An unknown format is -1. */
int har_decode_op(const struct har_op *op);
#endif
