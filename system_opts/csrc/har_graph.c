/* Int8 kernels of the graph path, bit-exact with model_opts/graph/intref.py (TFLite's int8 rules).
 *
 * One C function per kernel (conv: output channel, then output position, kernel rows, taps x input channels),
 * channel-last int8 tensors; the arithmetic is har_fixedpoint.h's (TFLite's
 * MultiplyByQuantizedMultiplier). Nothing allocates: tensors live in the caller's planned arena, constants
 * in the weight blob, both addressed by byte offsets from the op table. Int32 constants are read with
 * memcpy (any alignment, no aliasing question). Freestanding: <stdint.h> only.
 * Contract (firmware/graph_program.py checks it before a table is written): |bias| + terms * 255 * 128 <
 * 2^31 (no accumulator overflow), shifts in [-31, 30], multipliers >= 0, zero points and clamp bounds in
 * int8 with act_min <= act_max, an add's shifts <= 0, tensors inside the arena.
 */
#include <stdint.h>

#include "har_fixedpoint.h"
#include "har_graph.h"
#include "har_int8.h"


static inline int32_t ld32(const uint8_t *base, int32_t off, int32_t i) {
    int32_t v;
    __builtin_memcpy(&v, base + off + 4 * i, 4);
    return v;
}

static inline int8_t requant8(int32_t acc, int32_t m, int32_t shift, int32_t zp_out, int32_t lo, int32_t hi) {
    /* clamp before adding the zero point: the sum can then not overflow */
    return (int8_t)(clamp8(requantize(acc, m, shift), lo - zp_out, hi - zp_out) + zp_out);
}

/* sum_i (x[i] - zp) * w[i] as sum x w - zp sum w: two independent sums, no subtraction per term (|sum x w|
 * <= n * 128 * 127 and |zp sum w| <= n * 128 * 127 under the contract: no overflow) */
static inline int32_t dot(const int8_t *x, const int8_t *w, int32_t n, int32_t zp) {
    int32_t sxw = 0, sw = 0, i = 0;
#if defined(__ARM_FEATURE_DSP)
    /* 4 terms per step: SXTB16 widens bytes 0, 2 (and, rotated, 1, 3) to 16-bit lanes, SSUB16 takes the zero
     * point off in 16 bits (|x - zp| <= 255), SMLAD adds both lane products to the sum: the same integers */
    const int32_t zp2 = (int32_t)(((uint32_t)zp & 0xFFFFu) * 0x10001u);
    for (; i + 4 <= n; i += 4) {
        const int32_t xv = load32(x + i), wv = load32(w + i);
        sxw = __smlad(__ssub16(__sxtb16(xv), zp2), __sxtb16(wv), sxw);
        sxw = __smlad(__ssub16(sxtb16_ror8(xv), zp2), sxtb16_ror8(wv), sxw);
    }
#endif
    for (; i < n; i++) {
        sxw += (int32_t)x[i] * (int32_t)w[i];
        sw += w[i];
    }
    return sxw - zp * sw;
}

/* the n int8 weights of output channel o: a row of the dense (C_out, n) array, or (27 == HAR_G_PALETTE4)
 * decoded from 4-bit indices (two per byte, low nibble first, each row starting on a byte) into a
 * 16-entry palette at blob offset 28, written to the n-byte arena scratch at offset 29 */
static const int8_t *weight_row(const int32_t *op, const uint8_t *wb, uint8_t *arena, int32_t o, int32_t n) {
    if (op[27] != HAR_G_PALETTE4) return (const int8_t *)(wb + op[4]) + o * n;
    const uint8_t *idx = wb + op[4] + o * ((n + 1) / 2);
    const int8_t *pal = (const int8_t *)(wb + op[28]);
    int8_t *row = (int8_t *)(arena + op[29]);
    for (int32_t i = 0; i < n; i++) row[i] = pal[(idx[i >> 1] >> ((i & 1) * 4)) & 15];
    return row;
}

/* 8 H, 9 W, 10 C, 11 Ho, 12 Wo, 13 Co, 14 KH, 15 KW, 16 SH, 17 SW, 18 PH, 19 PW, 20 groups, 21 zp_in,
 * 22 zp_out, 23 act_min, 24 act_max, 27-29 weight storage (weight_row); weight OHWI (Co, KH, KW, C / groups)
 * int8; bias, multiplier, shift int32 (Co). Output channel outer (its weight row is fetched once), then
 * positions. A padded tap is the input zero point, which contributes (zp - zp) * w = 0, so each output sums
 * over the taps inside the input only: rows [ky0, ky1), columns [kx0, kx1). With groups 1 a row of taps is
 * one contiguous run of (kx1 - kx0) * C values in both the input and the weights (channel-last, OHWI), so it
 * is one dot product. */
static void conv(const int32_t *op, const uint8_t *wb, uint8_t *arena) {
    const int8_t *x = (const int8_t *)(arena + op[1]);
    int8_t *y = (int8_t *)(arena + op[3]);
    const int32_t h = op[8], wd = op[9], c = op[10], ho = op[11], wo = op[12], co = op[13];
    const int32_t kh = op[14], kw = op[15], sh = op[16], sw = op[17], ph = op[18], pw = op[19];
    const int32_t cg = c / op[20], og = co / op[20], zp = op[21];
    for (int32_t o = 0; o < co; o++) {
        const int8_t *w = weight_row(op, wb, arena, o, kh * kw * cg);
        const int32_t c0 = (o / og) * cg, bias = ld32(wb, op[5], o), m = ld32(wb, op[6], o), e = ld32(wb, op[7], o);
        for (int32_t oy = 0; oy < ho; oy++) {
            const int32_t iy0 = oy * sh - ph;
            const int32_t ky0 = iy0 < 0 ? -iy0 : 0, ky1 = h - iy0 < kh ? h - iy0 : kh;
            for (int32_t ox = 0; ox < wo; ox++) {
                const int32_t ix0 = ox * sw - pw;
                const int32_t kx0 = ix0 < 0 ? -ix0 : 0, kx1 = wd - ix0 < kw ? wd - ix0 : kw;
                int32_t acc = bias;
                /* padding >= kernel can leave no tap inside: then no input pointer is formed at all */
                for (int32_t ky = ky0; ky < ky1 && kx0 < kx1; ky++) {
                    const int8_t *xp = x + ((iy0 + ky) * wd + ix0 + kx0) * c + c0;
                    const int8_t *wp = w + (ky * kw + kx0) * cg;
                    if (cg == c) {
                        acc += dot(xp, wp, (kx1 - kx0) * c, zp);
                    } else {
                        for (int32_t kx = 0; kx < kx1 - kx0; kx++) acc += dot(xp + kx * c, wp + kx * cg, cg, zp);
                    }
                }
                y[(oy * wo + ox) * co + o] = requant8(acc, m, e, op[22], op[23], op[24]);
            }
        }
    }
}

/* 8 F, 13 Co, 21 zp_in, 22 zp_out, 23 act_min, 24 act_max, 27-29 weight storage; weight (Co, F) int8 */
static void linear(const int32_t *op, const uint8_t *wb, uint8_t *arena) {
    const int8_t *x = (const int8_t *)(arena + op[1]);
    int8_t *y = (int8_t *)(arena + op[3]);
    const int32_t f = op[8], co = op[13], zp = op[21];
    for (int32_t o = 0; o < co; o++) {
        const int32_t acc = dot(x, weight_row(op, wb, arena, o, f), f, zp) + ld32(wb, op[5], o);
        y[o] = requant8(acc, ld32(wb, op[6], o), ld32(wb, op[7], o), op[22], op[23], op[24]);
    }
}

/* 8 H, 9 W, 10 C, 11 Ho, 12 Wo, 14 KH, 15 KW, 16 SH, 17 SW; avg (op[0] == HAR_G_AVGPOOL): TFLite's int8
 * AVERAGE_POOL_2D, the raw sum s of the n values rounded as (s +- n/2) / n (C division truncates) */
static void pool(const int32_t *op, uint8_t *arena) {
    const int8_t *x = (const int8_t *)(arena + op[1]);
    int8_t *y = (int8_t *)(arena + op[3]);
    const int32_t wd = op[9], c = op[10], ho = op[11], wo = op[12], kh = op[14], kw = op[15];
    const int32_t n = kh * kw, avg = op[0] == HAR_G_AVGPOOL;
    for (int32_t oy = 0; oy < ho; oy++)
        for (int32_t ox = 0; ox < wo; ox++)
            for (int32_t ch = 0; ch < c; ch++) {
                int32_t m = -128, s = 0;
                for (int32_t ky = 0; ky < kh; ky++)
                    for (int32_t kx = 0; kx < kw; kx++) {
                        const int32_t v = x[((oy * op[16] + ky) * wd + ox * op[17] + kx) * c + ch];
                        m = v > m ? v : m;
                        s += v;
                    }
                if (avg) m = s > 0 ? (s + n / 2) / n : (s - n / 2) / n;
                y[(oy * wo + ox) * c + ch] = (int8_t)clamp8(m, -128, 127);
            }
}

/* 8 count (H * W), 10 C, 21 zp_in, 22 zp_out, 25 multiplier, 26 shift: TFLM's MEAN over H and W */
static void mean(const int32_t *op, uint8_t *arena) {
    const int8_t *x = (const int8_t *)(arena + op[1]);
    int8_t *y = (int8_t *)(arena + op[3]);
    const int32_t count = op[8], c = op[10], zp = op[21];
    for (int32_t ch = 0; ch < c; ch++) {
        int32_t s = 0;
        for (int32_t k = 0; k < count; k++) s += (int32_t)x[k * c + ch] - zp;
        y[ch] = requant8(s, op[25], op[26], op[22], -128, 127);
    }
}

/* 8 n, 9 left shift, 21 zp_1, 27 zp_2, 22 zp_out, 23 act_min, 24 act_max, 25/26 input 1's multiplier and
 * shift, 28/29 input 2's, 30/31 the output's (every shift <= 0): TFLite's int8 ADD */
static void add(const int32_t *op, uint8_t *arena) {
    const int8_t *a = (const int8_t *)(arena + op[1]), *b = (const int8_t *)(arena + op[2]);
    int8_t *y = (int8_t *)(arena + op[3]);
    const int32_t n = op[8], ls = op[9];
    for (int32_t k = 0; k < n; k++) {
        const int32_t ya = requantize(((int32_t)a[k] - op[21]) * (1 << ls), op[25], op[26]);
        const int32_t yb = requantize(((int32_t)b[k] - op[27]) * (1 << ls), op[28], op[29]);
        y[k] = requant8(ya + yb, op[30], op[31], op[22], op[23], op[24]);
    }
}

/* 8 n, 23 act_min, 24 act_max: a standalone ReLU / ReLU6 keeps its input's quantization (a clamp) */
static void relu(const int32_t *op, uint8_t *arena) {
    const int8_t *x = (const int8_t *)(arena + op[1]);
    int8_t *y = (int8_t *)(arena + op[3]);
    for (int32_t k = 0; k < op[8]; k++) y[k] = (int8_t)clamp8(x[k], op[23], op[24]);
}

int32_t har_g_op_run(const int32_t *op, const uint8_t *weights, uint8_t *arena) {
    switch (op[0]) {
    case HAR_G_CONV: conv(op, weights, arena); return 0;
    case HAR_G_LINEAR: linear(op, weights, arena); return 0;
    case HAR_G_MAXPOOL:
    case HAR_G_AVGPOOL: pool(op, arena); return 0;
    case HAR_G_MEAN: mean(op, arena); return 0;
    case HAR_G_ADD: add(op, arena); return 0;
    case HAR_G_RELU: relu(op, arena); return 0;
    default: return HAR_G_ERR_KIND;
    }
}

int32_t har_g_run(const int32_t *ops, int32_t n_ops, const uint8_t *weights, uint8_t *arena) {
    for (int32_t i = 0; i < n_ops; i++) {
        const int32_t r = har_g_op_run(ops + i * HAR_G_OP_WORDS, weights, arena);
        if (r) return r;
    }
    return 0;
}

void har_g_quantize(const float *x, int32_t n, float inv_scale, float offset, int32_t zero_point, int8_t *y) {
    for (int32_t k = 0; k < n; k++) {
        float v = x[k] * inv_scale;
        v = v + offset;
        y[k] = har_q8(v, zero_point);
    }
}

uint32_t har_g_crc32(const uint8_t *p, uint32_t n) {
    uint32_t crc = 0xFFFFFFFFu;
    for (uint32_t k = 0; k < n; k++) {
        crc ^= p[k];
        for (int32_t b = 0; b < 8; b++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return crc ^ 0xFFFFFFFFu;
}

int32_t har_g_abi_version(void) { return 1; }
