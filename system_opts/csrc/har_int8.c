/* Int8 kernels of har-memopt's static-pool runtime, bit-exact with model_opts/quant/intref.py.
 *
 * One op = one `struct har_op` (har_int8.h: kind, integer attributes, pointers into the planned arena and
 * the weights); `har_run` runs a table of them in order. Nothing here allocates: every buffer is planned
 * and owned by the caller (system_opts/buffer_pool_c.py on the host, the generated har_model.c of
 * firmware/export.py on a device), so the same file builds for a host shared library and for a bare-metal
 * Cortex-M (freestanding: <stdint.h>, and <arm_acle.h> on DSP targets; no libc, no libm).
 * Arithmetic (TFLite int8 rules, model_opts/quant/fixedpoint.py):
 *   acc  = bias[c] + sum_j (x[j] - zp_in) * w[j][c]      int32, wrapping like the reference
 *   q    = clamp(MultiplyByQuantizedMultiplier(acc, m[c], shift[c]) + zp_out, act_min, act_max)
 * Contract (checked by the exporter and the Python session before a table reaches this file): shift in
 * [-31, 30], multiplier >= 0, zero points in [-128, 127], act_min <= act_max, and k * c_in * 255 * 128 below
 * 2^31 so that no partial sum overflows. Float steps repeat numpy's order and rounding (x * inv_scale,
 * + offset, har_q8; (q - zp) * scale); build with -ffp-contract=off so no multiply-add is fused.
 */
#include <stdint.h>

#include "har_int8.h"
#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
/* a 4-byte load from any alignment (the builtin inlines to one LDR: -ffreestanding disables plain memcpy's) */
static inline int32_t load32(const void *p) {
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}
/* SXTB16 of the value rotated by 8 (bytes 1 and 3) in one instruction; GCC 12's <arm_acle.h> has no __ror
 * and does not fold a rotate into SXTB16 */
static inline int32_t sxtb16_ror8(int32_t v) {
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}
#endif

static inline int32_t srdhm(int32_t a, int32_t b) {
    /* gemmlowp SaturatingRoundingDoublingHighMul: C division truncates toward zero, as gemmlowp */
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? (1LL << 30) : (1 - (1LL << 30));
    return (int32_t)((ab + nudge) / (1LL << 31));
}

static inline int32_t rdbpot(int32_t x, int32_t e) {
    /* gemmlowp RoundingDivideByPOT, 0 <= e <= 31: ties away from zero */
    int64_t mask = (1LL << e) - 1;
    int64_t rem = (int64_t)x & mask;
    int64_t threshold = (mask >> 1) + (x < 0);
    return (int32_t)(((int64_t)x >> e) + (rem > threshold));
}

static inline int32_t requantize(int32_t x, int32_t m, int32_t shift) {
    /* TFLite MultiplyByQuantizedMultiplier; the left shift saturates (UB in TFLite's C) */
    int32_t left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    int64_t xs = (int64_t)x * (1LL << left);
    if (xs > INT32_MAX) xs = INT32_MAX;
    if (xs < INT32_MIN) xs = INT32_MIN;
    return rdbpot(srdhm((int32_t)xs, m), right);
}

static inline int8_t clamp8(int32_t v, int32_t lo, int32_t hi) {
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

/* i: rows, channels, zero_point; p: x (float, rows x C), y (int8), inv_scale[C], offset[C] */
static void quantize_input(const struct har_op *op) {
    const int32_t rows = op->i[0], c = op->i[1], zp = op->i[2];
    const float *x = op->p[0], *inv = op->p[2], *off = op->p[3];
    int8_t *y = op->p[1];
    for (int32_t t = 0; t < rows; t++)
        for (int32_t ch = 0; ch < c; ch++) {
            float v = x[t * c + ch] * inv[ch];
            v = v + off[ch];
            y[t * c + ch] = har_q8(v, zp);
        }
}

static inline int8_t output(int32_t acc, int32_t bias, int32_t m, int32_t shift, int32_t zp_out, int32_t lo,
                            int32_t hi) {
    const int32_t a = (int32_t)((uint32_t)acc + (uint32_t)bias); /* wraps like the reference */
    return clamp8(requantize(a, m, shift) + zp_out, lo, hi);
}

/* (x - zp_in) of one im2col row into int16, each group of 4 stored as x0, x2, x1, x3: the order in which
 * SXTB16 unpacks 4 int8 weights into two int16 pairs (bytes 0, 2 and, rotated by 8, bytes 1, 3). */
static void im2col16_row(const int8_t *row, int32_t terms, int32_t zp, int16_t *xs) {
    const int32_t quads = terms & ~3;
    for (int32_t j = 0; j < quads; j += 4) {
        xs[j] = (int16_t)(row[j] - zp);
        xs[j + 1] = (int16_t)(row[j + 2] - zp);
        xs[j + 2] = (int16_t)(row[j + 1] - zp);
        xs[j + 3] = (int16_t)(row[j + 3] - zp);
    }
    for (int32_t j = quads; j < terms; j++) xs[j] = (int16_t)(row[j] - zp);
}

/* sum_j xs'[j] * w[j] for two weight rows at once (xs in im2col16_row's order): dual 16-bit MACs on DSP
 * targets, the same products one by one elsewhere */
static void dot16x2(const int16_t *restrict xs, const int8_t *restrict w0, const int8_t *restrict w1,
                    int32_t terms, int32_t *a0, int32_t *a1) {
    const int32_t quads = terms & ~3;
    int32_t s0 = 0, s1 = 0;
#if defined(__ARM_FEATURE_DSP)
    for (int32_t j = 0; j < quads; j += 4) {
        const int32_t xa = load32(xs + j), xb = load32(xs + j + 2), wa = load32(w0 + j), wb = load32(w1 + j);
        s0 = __smlad(__sxtb16(wa), xa, s0);
        s0 = __smlad(sxtb16_ror8(wa), xb, s0);
        s1 = __smlad(__sxtb16(wb), xa, s1);
        s1 = __smlad(sxtb16_ror8(wb), xb, s1);
    }
#else
    for (int32_t j = 0; j < quads; j += 4) {
        s0 += xs[j] * w0[j] + xs[j + 1] * w0[j + 2] + xs[j + 2] * w0[j + 1] + xs[j + 3] * w0[j + 3];
        s1 += xs[j] * w1[j] + xs[j + 1] * w1[j + 2] + xs[j + 2] * w1[j + 1] + xs[j + 3] * w1[j + 3];
    }
#endif
    for (int32_t j = quads; j < terms; j++) {
        s0 += xs[j] * w0[j];
        s1 += xs[j] * w1[j];
    }
    *a0 = s0;
    *a1 = s1;
}

/* Conv1d (and Linear: rows_out 1, k 1, pad 0) on channel-last int8 rows.
 * i: n_in (rows of the unpadded input), c_in, k, pad, rows_out (rows computed), c_out, phases,
 *    zp_in, zp_out, act_min, act_max, mode (HAR_GEMM_*)
 * p: x (first halo row: pad rows of zp_in, n_in rows, pad rows), y, w (c_out x k*c_in), bias, m,
 *    shift (int8); time-major: xt (int16, c_in x (n_in + 2 pad)), acc (int32, rows_out);
 *    im2col16: xs (int16, k*c_in)
 * Three loop orders, the same integers (every partial sum is exact in int32):
 * - dot: output (t, c) is one dot product of the k*c_in contiguous input bytes from row t with weight
 *   row c; no scratch (the smallest arena; the portable device choice).
 * - time-major: transpose (x - zp_in) to channel-first int16 once, then for each output channel add
 *   w[c][kk][ch] * xt[ch][t + kk] over all t at once; fast on the host for the first layers, where
 *   k*c_in is short and T long.
 * - im2col16: per output row, (x - zp_in) once into int16 scratch, then two output channels at a time
 *   with SMLAD (two 16-bit MACs per instruction) on Cortex-M4/M7/M33 (ARMv7E-M DSP); portable C elsewhere.
 * (x - zp_in) * w fits int16 * int16 in all three.
 * Output row t lands at (t % phases) * (rows_out / phases) + t / phases: phase-major for an in-place
 * max pool of kernel `phases` after it. */
static void gemm(const struct har_op *op) {
    const int32_t n_in = op->i[0], c_in = op->i[1], k = op->i[2], pad = op->i[3], rows = op->i[4],
                  c_out = op->i[5], phases = op->i[6], zp_in = op->i[7], zp_out = op->i[8],
                  lo = op->i[9], hi = op->i[10], mode = op->i[11];
    int8_t *x = op->p[0], *y = op->p[1];
    const int8_t *restrict w = op->p[2];
    const int8_t *shift = op->p[5];
    const int32_t *bias = op->p[3], *m = op->p[4];
    const int32_t terms = k * c_in, per = rows / phases, n_pad = n_in + 2 * pad;
    /* other buffers share the halo bytes between inferences */
    for (int32_t j = 0; j < pad * c_in; j++) {
        x[j] = (int8_t)zp_in;
        x[(pad + n_in) * c_in + j] = (int8_t)zp_in;
    }
    if (mode == HAR_GEMM_IM2COL16) {
        int16_t *restrict xs = op->p[6];
        for (int32_t ph = 0; ph < phases; ph++)
            for (int32_t r = 0; r < per; r++) {
                im2col16_row(x + (ph + phases * r) * c_in, terms, zp_in, xs);
                int8_t *out = y + (ph * per + r) * c_out;
                int32_t c = 0;
                for (; c + 1 < c_out; c += 2) {
                    int32_t a0, a1;
                    dot16x2(xs, w + c * terms, w + (c + 1) * terms, terms, &a0, &a1);
                    out[c] = output(a0, bias[c], m[c], shift[c], zp_out, lo, hi);
                    out[c + 1] = output(a1, bias[c + 1], m[c + 1], shift[c + 1], zp_out, lo, hi);
                }
                if (c < c_out) {
                    int32_t a0, a1;
                    dot16x2(xs, w + c * terms, w + c * terms, terms, &a0, &a1);
                    out[c] = output(a0, bias[c], m[c], shift[c], zp_out, lo, hi);
                }
            }
        return;
    }
    if (mode == HAR_GEMM_DOT) {
        for (int32_t ph = 0; ph < phases; ph++)
            for (int32_t r = 0; r < per; r++) {
                const int8_t *restrict row = x + (ph + phases * r) * c_in;
                int8_t *out = y + (ph * per + r) * c_out;
                for (int32_t c = 0; c < c_out; c++) {
                    const int8_t *restrict wc = w + c * terms;
                    int32_t a = 0;
                    for (int32_t j = 0; j < terms; j++) a += (int32_t)(int16_t)(row[j] - zp_in) * (int32_t)wc[j];
                    out[c] = output(a, bias[c], m[c], shift[c], zp_out, lo, hi);
                }
            }
        return;
    }
    int16_t *restrict xt = op->p[6];
    int32_t *restrict acc = op->p[7];
    for (int32_t t = 0; t < n_pad; t++)
        for (int32_t ch = 0; ch < c_in; ch++) xt[ch * n_pad + t] = (int16_t)(x[t * c_in + ch] - zp_in);
    for (int32_t c = 0; c < c_out; c++) {
        for (int32_t t = 0; t < rows; t++) acc[t] = 0;
        for (int32_t kk = 0; kk < k; kk++)
            for (int32_t ch = 0; ch < c_in; ch++) {
                const int32_t wv = w[c * terms + kk * c_in + ch];
                const int16_t *restrict src = xt + ch * n_pad + kk;
                for (int32_t t = 0; t < rows; t++) acc[t] += (int32_t)src[t] * wv;
            }
        for (int32_t ph = 0; ph < phases; ph++)
            for (int32_t r = 0; r < per; r++)
                y[(ph * per + r) * c_out + c] = output(acc[ph + phases * r], bias[c], m[c], shift[c], zp_out, lo, hi);
    }
}

/* i: rows_out, channels, kernel, phase_major; p: x, y.  Phase-major input: y is x's first block and
 * y[r] = max_j x[j * rows_out + r] in place; otherwise y[t] = max_j x[t * kernel + j]. */
static void maxpool(const struct har_op *op) {
    const int32_t rows = op->i[0], c = op->i[1], k = op->i[2], phase_major = op->i[3];
    const int8_t *x = op->p[0];
    int8_t *y = op->p[1];
    for (int32_t r = 0; r < rows; r++)
        for (int32_t ch = 0; ch < c; ch++) {
            int8_t best = -128;
            for (int32_t j = 0; j < k; j++) {
                const int8_t v = phase_major ? x[(j * rows + r) * c + ch] : x[(r * k + j) * c + ch];
                best = v > best ? v : best;
            }
            y[r * c + ch] = best;
        }
}

/* i: length, channels, zp_in, zp_out; p: x (length x C), y (C), m (1), shift (1, int8) */
static void global_avg_pool(const struct har_op *op) {
    const int32_t length = op->i[0], c = op->i[1], zp_in = op->i[2], zp_out = op->i[3];
    const int8_t *x = op->p[0], *shift = op->p[3];
    const int32_t *m = op->p[2];
    int8_t *y = op->p[1];
    for (int32_t ch = 0; ch < c; ch++) {
        int32_t s = 0;
        for (int32_t t = 0; t < length; t++) s += (int32_t)x[t * c + ch] - zp_in;
        y[ch] = clamp8(requantize(s, m[0], shift[0]) + zp_out, -128, 127);
    }
}

/* i: n, zp; f: scale; p: x (int8), y (float) */
static void dequantize(const struct har_op *op) {
    const int32_t n = op->i[0];
    const float zp = (float)op->i[1], scale = op->f[0];
    const int8_t *x = op->p[0];
    float *y = op->p[1];
    for (int32_t j = 0; j < n; j++) y[j] = ((float)x[j] - zp) * scale;
}

int har_op_run(const struct har_op *op) {
    switch (op->kind) {
    case HAR_QUANTIZE: quantize_input(op); return 0;
    case HAR_GEMM: gemm(op); return 0;
    case HAR_MAXPOOL: maxpool(op); return 0;
    case HAR_GAP: global_avg_pool(op); return 0;
    case HAR_DEQUANTIZE: dequantize(op); return 0;
    default: return -1;
    }
}

int har_run(const struct har_op *ops, int32_t n) {
    for (int32_t i = 0; i < n; i++)
        if (har_op_run(ops + i)) return -1 - i;
    return 0;
}

/* `repeats` runs of the table: lets a host benchmark time the C compute apart from the ctypes call */
int har_run_repeat(const struct har_op *ops, int32_t n, int32_t repeats) {
    for (int32_t r = 0; r < repeats; r++) {
        const int rc = har_run(ops, n);
        if (rc) return rc;
    }
    return 0;
}

int32_t har_abi_version(void) { return 1; }
