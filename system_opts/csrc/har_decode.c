/* Weight-format decoders (har_decode.h): palette indices, canonical Huffman, bitmask.
 *
 * Bounds: input bytes are fetched one at a time, each after checking pos < src_bytes, so a stream that is
 * too short ends the decode with -1 (never a read past src + src_bytes), and dst is written only at
 * j < n. No multiplication, division or 64-bit arithmetic (ARMv6-M has no divider: no libgcc calls), no
 * libc: the file builds with -ffreestanding for Cortex-M0+ and M4. */
#include "har_decode.h"
#include <stddef.h>

/* uint8 -> int8 by value (two's complement) without an implementation-defined conversion */
static int8_t har_s8(uint32_t u) {
    return (int8_t)((int32_t)u - (int32_t)((u & 0x80u) << 1));
}

/* Cost: per index one refill test, a shift and a mask (plus one byte load every 8 / bits indices);
 * the codebook lookup is one load. O(n), constant stack. */
int har_decode_palette(const uint8_t *src, int32_t src_bytes, int32_t bits, const int8_t *codebook,
                       int32_t k, int8_t *dst, int32_t n) {
    uint32_t buf = 0, mask;
    int32_t have = 0, pos = 0, j;
    if (!src || !codebook || !dst || src_bytes < 0 || n < 0 || bits < 1 || bits > 8 || k < 1) return -1;
    mask = (1u << bits) - 1u;
    for (j = 0; j < n; j++) {
        uint32_t idx;
        if (have < bits) { /* at most one byte is needed: have + 8 >= bits */
            if (pos >= src_bytes) return -1;
            buf |= (uint32_t)src[pos++] << have;
            have += 8;
        }
        idx = buf & mask;
        buf >>= bits;
        have -= bits;
        if (idx >= (uint32_t)k) return -1;
        dst[j] = codebook[idx];
    }
    return 0;
}

/* Cost: one table check of 15 counts up front; per symbol, per code bit: a refill test, a shift, one
 * count[] load and a compare (the canonical walk: codes of length len are first..first+count[len]-1, so a
 * code of length len is found when code - first < count[len], and its symbol is at index + code - first).
 * Average cost ~ the mean code length per symbol; no decode table in RAM (constant stack, no tables). */
int har_decode_huffman(const uint8_t *src, int32_t src_bytes, const uint16_t *count, const uint8_t *symbols,
                       int32_t n_symbols, const int8_t *codebook, int32_t k, int8_t *dst, int32_t n) {
    uint32_t buf = 0;
    int32_t have = 0, pos = 0, j, len, left = 1, total = 0;
    if (!src || !count || !symbols || !dst || src_bytes < 0 || n < 0 || n_symbols < 0) return -1;
    if (codebook && k < 1) return -1;
    for (len = 1; len <= HAR_HUFFMAN_MAX_BITS; len++) { /* Kraft: over-subscribed counts are malformed */
        left = (left << 1) - (int32_t)count[len];
        total += (int32_t)count[len];
        if (left < 0) return -1;
    }
    if (total > n_symbols) return -1; /* so index + code - first < total stays inside symbols[] */
    for (j = 0; j < n; j++) {
        int32_t code = 0, first = 0, index = 0, c;
        uint32_t sym;
        for (len = 1;; len++) {
            if (have == 0) {
                if (pos >= src_bytes) return -1;
                buf = src[pos++];
                have = 8;
            }
            code |= (int32_t)(buf & 1u); /* the code's bits arrive MSB first */
            buf >>= 1;
            have--;
            c = (int32_t)count[len];
            if (code - first < c) break;
            if (len == HAR_HUFFMAN_MAX_BITS) return -1; /* an unassigned bit pattern */
            index += c;
            first = (first + c) << 1;
            code <<= 1;
        }
        sym = symbols[index + code - first];
        if (codebook) {
            if (sym >= (uint32_t)k) return -1;
            dst[j] = codebook[sym];
        } else {
            dst[j] = har_s8(sym);
        }
    }
    return 0;
}

/* Cost: per weight one mask-bit test and a store; per nonzero weight one bounds test and a load. O(n). */
int har_decode_bitmask(const uint8_t *src, int32_t src_bytes, int8_t *dst, int32_t n) {
    int32_t pos, j;
    if (!src || !dst || src_bytes < 0 || n < 0) return -1;
    pos = (n >> 3) + ((n & 7) != 0); /* ceil(n / 8) without overflowing n + 7 */
    if (src_bytes < pos) return -1;
    for (j = 0; j < n; j++) {
        if ((src[j >> 3] >> (j & 7)) & 1u) {
            if (pos >= src_bytes) return -1;
            dst[j] = har_s8(src[pos++]);
        } else {
            dst[j] = 0;
        }
    }
    return 0;
}

/* Cost: a switch and one call. */
int har_decode_op(const struct har_op *op) {
    if (!op) return -1;
    switch (op->i[0]) {
    case HAR_FMT_PALETTE:
        return har_decode_palette((const uint8_t *)op->p[0], op->i[2], op->i[3], (const int8_t *)op->p[2],
                                  op->i[5], (int8_t *)op->p[1], op->i[1]);
    case HAR_FMT_HUFFMAN:
        return har_decode_huffman((const uint8_t *)op->p[0], op->i[2], (const uint16_t *)op->p[3],
                                  (const uint8_t *)op->p[4], op->i[4], (const int8_t *)op->p[2], op->i[5],
                                  (int8_t *)op->p[1], op->i[1]);
    case HAR_FMT_BITMASK:
        return har_decode_bitmask((const uint8_t *)op->p[0], op->i[2], (int8_t *)op->p[1], op->i[1]);
    default:
        return -1;
    }
}
