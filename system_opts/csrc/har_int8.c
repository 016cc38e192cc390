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
/* which kernels and gemm loop orders this build holds (HAR_WITH_*: 1 or 0): the host session's
 * har_int8_config.h enables all; an export writes one enabling what its op table uses, so a device links
 * no dead kernel. A disabled kind or mode makes har_op_run return -1, never a wrong result. */
#include "har_int8_config.h"
/* switches added after an export's config was written default to off (an old config still builds) */
#ifndef HAR_WITH_GEMM_CSR
#define HAR_WITH_GEMM_CSR 0
#endif
#ifndef HAR_WITH_GEMM_PALETTE4
#define HAR_WITH_GEMM_PALETTE4 0
#endif
#ifndef HAR_WITH_DECODE
#define HAR_WITH_DECODE 0
#endif
#ifndef HAR_WITH_DWCONV
#define HAR_WITH_DWCONV 0
#endif
#if HAR_WITH_DECODE
#include "har_decode.h"
#endif

#include "har_fixedpoint.h"

/* i: rows, channels, zero_point; p: x (float, rows x C), y (int8), inv_scale[C], offset[C] */
#if HAR_WITH_QUANTIZE
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
#endif

static inline int8_t output(int32_t acc, int32_t bias, int32_t m, int32_t shift, int32_t zp_out, int32_t lo,
                            int32_t hi) {
    const int32_t a = (int32_t)((uint32_t)acc + (uint32_t)bias); /* wraps like the reference */
    /* clamp before adding zp_out: requantize may return values near INT32_MAX, where + zp_out overflows */
    return (int8_t)(clamp8(requantize(a, m, shift), lo - zp_out, hi - zp_out) + zp_out);
}

/* (x - zp_in) of the whole padded input (n int8 values) into int16 scratch, in order, plus 4 zeros after
 * it (read, times zero weights, by the last window's padding terms). On DSP targets 4 values per step:
 * SXTB16 gives (x0, x2) and, rotated by 8, (x1, x3); PKHBT / PKHTB re-pair them as (x0, x1), (x2, x3);
 * SSUB16 subtracts zp from both halves (exact: x - zp lies in [-255, 255]). */
#if HAR_WITH_GEMM_IM2COL16
static void to_int16(const int8_t *x, int32_t n, int32_t zp, int16_t *xs) {
    int32_t j = 0;
#if defined(__ARM_FEATURE_DSP)
    const int32_t zp2 = (int32_t)(((uint32_t)zp & 0xFFFFu) * 0x10001u);
    for (; j + 4 <= n; j += 4) {
        const int32_t v = load32(x + j), even = __sxtb16(v), odd = sxtb16_ror8(v);
        const int32_t lo = (int32_t)(((uint32_t)even & 0xFFFFu) | ((uint32_t)odd << 16));  /* PKHBT */
        const int32_t hi = (int32_t)(((uint32_t)odd & 0xFFFF0000u) | ((uint32_t)even >> 16)); /* PKHTB */
        const int32_t p0 = __ssub16(lo, zp2), p1 = __ssub16(hi, zp2);
        __builtin_memcpy(xs + j, &p0, 4);
        __builtin_memcpy(xs + j + 2, &p1, 4);
    }
#endif
    for (; j < n; j++) xs[j] = (int16_t)(x[j] - zp);
    for (int32_t t = 0; t < 4; t++) xs[n + t] = 0;
}

/* The 2 x 2 block of the im2col16 gemm: two input windows (int16, in order, from to_int16) times two
 * weight rows (interleaved by quad: 4 bytes of channel c, 4 of channel c + 1, each quad stored as w0, w2,
 * w1, w3 so that SXTB16 yields the pairs (w0, w1) and, rotated by 8, (w2, w3)): each weight load and
 * unpack serves two rows and each input load two channels (CMSIS-NN's s8 x s16 kernel does the same).
 * acc = r0c0, r0c1, r1c0, r1c1. */
__attribute__((noinline)) static void dot2x2(const int16_t *restrict x0, const int16_t *restrict x1,
                                             const int8_t *restrict wp, int32_t quads, int32_t *acc) {
    int32_t s00 = 0, s01 = 0, s10 = 0, s11 = 0;
#if defined(__ARM_FEATURE_DSP)
    for (; quads > 0; quads--, x0 += 4, x1 += 4, wp += 8) {
        const int32_t a0 = load32(x0), b0 = load32(x0 + 2), a1 = load32(x1), b1 = load32(x1 + 2);
        int32_t w = load32(wp);
        int32_t lo = __sxtb16(w), hi = sxtb16_ror8(w);
        s00 = __smlad(hi, b0, __smlad(lo, a0, s00));
        s10 = __smlad(hi, b1, __smlad(lo, a1, s10));
        w = load32(wp + 4);
        lo = __sxtb16(w);
        hi = sxtb16_ror8(w);
        s01 = __smlad(hi, b0, __smlad(lo, a0, s01));
        s11 = __smlad(hi, b1, __smlad(lo, a1, s11));
    }
#else
    for (; quads > 0; quads--, x0 += 4, x1 += 4, wp += 8) {
        const int8_t *w0 = wp, *w1 = wp + 4;
        s00 += x0[0] * w0[0] + x0[1] * w0[2] + x0[2] * w0[1] + x0[3] * w0[3];
        s01 += x0[0] * w1[0] + x0[1] * w1[2] + x0[2] * w1[1] + x0[3] * w1[3];
        s10 += x1[0] * w0[0] + x1[1] * w0[2] + x1[2] * w0[1] + x1[3] * w0[3];
        s11 += x1[0] * w1[0] + x1[1] * w1[2] + x1[2] * w1[1] + x1[3] * w1[3];
    }
#endif
    acc[0] = s00;
    acc[1] = s01;
    acc[2] = s10;
    acc[3] = s11;
}
#endif

/* Conv1d (and Linear: rows_out 1, k 1, pad 0) on channel-last int8 rows.
 * i: n_in (rows of the unpadded input), c_in, k, pad, rows_out (rows computed), c_out, phases,
 *    zp_in, zp_out, act_min, act_max, mode (HAR_GEMM_*)
 * p: x (first halo row: pad rows of zp_in, n_in rows, pad rows), y, w (c_out x k*c_in), bias, m,
 *    shift (int8); time-major: xt (int16, c_in x (n_in + 2 pad)), acc (int32, rows_out);
 *    im2col16: xs (int16, (n_in + 2 pad) * c_in + 4); w in the im2col16 layout: rows zero-padded to tp =
 *    k*c_in rounded up to a multiple of 4, channels in pairs (c, c + 1) interleaved by 4 terms, each quad
 *    stored w0, w2, w1, w3, a zero row after an odd last channel: ceil(c_out / 2) * 2 * tp bytes (the
 *    exporter writes it); csr: p[2] w = val (int8, nnz: the nonzeros of w, row after row), p[6] row_ptr
 *    (const uint16_t *, c_out + 1: channel c's nonzeros are row_ptr[c] .. row_ptr[c + 1] - 1), p[7] col
 *    (const uint16_t *, nnz: each nonzero's term index kk * c_in + ch, increasing within a channel)
 *    (model_opts/csr.py encodes it and mirrors this loop in numpy)
 * Five loop orders, the same integers (every partial sum is exact in int32):
 * - dot: output (t, c) is one dot product of the k*c_in contiguous input bytes from row t with weight
 *   row c; no scratch (the smallest arena; the portable device choice).
 * - time-major: transpose (x - zp_in) to channel-first int16 once, then for each output channel add
 *   w[c][kk][ch] * xt[ch][t + kk] over all t at once; fast on the host for the first layers, where
 *   k*c_in is short and T long.
 * - im2col16: (x - zp_in) of the whole padded input once into int16 scratch, then 2 rows x 2 output
 *   channels at a time with SMLAD (two 16-bit MACs per instruction) on Cortex-M4/M7/M33 (ARMv7E-M DSP);
 *   portable C elsewhere.
 * - csr: the dot order over channel c's nonzeros only (magnitude-pruned weights, >= 90 % zeros); no
 *   scratch. Cost per nonzero vs per dense term of dot (arm-none-eabi-gcc 12.2 -O2 inner loops, not
 *   timed): M4 7 instructions (LDRH col, LDRSB val, LDRSB row[col] by register offset, SUB, SMLABB,
 *   CMP, branch) vs dot's 6; M0+ 14 (2 stack reloads: 8 low registers) vs dot's 11. With 2-cycle loads
 *   that is ~1.3x a dense term, plus two row_ptr loads per channel: csr beats dot below ~75 % density,
 *   but the M4's im2col16 (SMLAD, 2 x 2 blocks, ~1.3 cycles per MAC) only below ~12 %, about where 90 %
 *   sparsity lands; there its gain is the weight bytes: 2 (c_out + 1) + 3 nnz instead of c_out * terms.
 * - palette4: the dot order reading clustered weights straight from flash: p[2] the 4-bit codebook index
 *   of every term of the (c_out x k*c_in) dot-order matrix, two per byte, low nibble first; p[6] the
 *   layer's codebook (its k <= 16 int8 entries; every index is < k, the exporter's guarantee). No arena slot (decoding the layer into RAM is the
 *   HAR_DECODE op's alternative); per term one more load and a shift/mask than dot.
 *   Folding zp_in into the bias (TFLite's way) would save the SUB but change the stored bias: not done,
 *   so the op record is the dot mode's but for the three pointers.
 * (x - zp_in) * w fits int16 * int16 in all five.
 * Output row t lands at (t % phases) * (rows_out / phases) + t / phases: phase-major for an in-place
 * max pool of kernel `phases` after it. */
#if !(HAR_WITH_GEMM_DOT || HAR_WITH_GEMM_TIME_MAJOR || HAR_WITH_GEMM_IM2COL16 || HAR_WITH_GEMM_CSR || \
      HAR_WITH_GEMM_PALETTE4)
static int gemm(const struct har_op *op) {
    (void)op;
    return -1; /* a build without any gemm loop order */
}
#else
static int gemm(const struct har_op *op) {
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
#if HAR_WITH_GEMM_IM2COL16
    if (mode == HAR_GEMM_IM2COL16) {
        /* the padded input once into int16; output row t's window is then xs + t * c_in (rows overlap, so
         * no per-row im2col copy); rows two at a time (t, t + phases of one phase; an odd last row is paired
         * with itself), output channels two at a time from their interleaved weights */
        const int32_t tp = (terms + 3) & ~3, quads = tp / 4;
        int16_t *restrict xs = op->p[6];
        to_int16(x, n_pad * c_in, zp_in, xs);
        for (int32_t ph = 0; ph < phases; ph++)
            for (int32_t r = 0; r < per; r += 2) {
                const int32_t r1 = r + 1 < per ? r + 1 : r;
                const int16_t *x0 = xs + (ph + phases * r) * c_in, *x1 = xs + (ph + phases * r1) * c_in;
                int8_t *out0 = y + (ph * per + r) * c_out, *out1 = y + (ph * per + r1) * c_out;
                for (int32_t c = 0; c < c_out; c += 2) {
                    int32_t a[4];
                    dot2x2(x0, x1, w + c * tp, quads, a);
                    out0[c] = output(a[0], bias[c], m[c], shift[c], zp_out, lo, hi);
                    out1[c] = output(a[2], bias[c], m[c], shift[c], zp_out, lo, hi);
                    if (c + 1 < c_out) {
                        out0[c + 1] = output(a[1], bias[c + 1], m[c + 1], shift[c + 1], zp_out, lo, hi);
                        out1[c + 1] = output(a[3], bias[c + 1], m[c + 1], shift[c + 1], zp_out, lo, hi);
                    }
                }
            }
        return 0;
    }
#endif
#if HAR_WITH_GEMM_DOT
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
        return 0;
    }
#endif
#if HAR_WITH_GEMM_CSR
    if (mode == HAR_GEMM_CSR) {
        const uint16_t *restrict row_ptr = op->p[6], *restrict col = op->p[7];
        for (int32_t ph = 0; ph < phases; ph++)
            for (int32_t r = 0; r < per; r++) {
                const int8_t *restrict row = x + (ph + phases * r) * c_in;
                int8_t *out = y + (ph * per + r) * c_out;
                for (int32_t c = 0; c < c_out; c++) {
                    /* walking pointers: few live registers (Cortex-M0+ has 8 low ones) */
                    const uint16_t *restrict cj = col + row_ptr[c], *const ce = col + row_ptr[c + 1];
                    const int8_t *restrict vj = w + row_ptr[c];
                    int32_t a = 0;
                    while (cj < ce) a += (int32_t)(int16_t)(row[*cj++] - zp_in) * (int32_t)*vj++;
                    out[c] = output(a, bias[c], m[c], shift[c], zp_out, lo, hi);
                }
            }
        return 0;
    }
#endif
#if HAR_WITH_GEMM_PALETTE4
    if (mode == HAR_GEMM_PALETTE4) {
        const uint8_t *restrict idx = op->p[2]; /* p[2] holds indices here, not the int8 w */
        const int8_t *restrict cb = op->p[6];
        (void)w;
        for (int32_t ph = 0; ph < phases; ph++)
            for (int32_t r = 0; r < per; r++) {
                const int8_t *restrict row = x + (ph + phases * r) * c_in;
                int8_t *out = y + (ph * per + r) * c_out;
                for (int32_t c = 0; c < c_out; c++) {
                    int32_t a = 0;
                    for (int32_t j = 0, q = c * terms; j < terms; j++, q++) {
                        const int32_t wv = cb[(idx[q >> 1] >> ((q & 1) << 2)) & 15];
                        a += (int32_t)(int16_t)(row[j] - zp_in) * wv;
                    }
                    out[c] = output(a, bias[c], m[c], shift[c], zp_out, lo, hi);
                }
            }
        return 0;
    }
#endif
#if HAR_WITH_GEMM_TIME_MAJOR
    if (mode != HAR_GEMM_TIME_MAJOR) return -1;
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
    return 0;
#else
    (void)n_pad;
    (void)terms;
    return -1;
#endif
}
#endif

/* Depthwise Conv1d (depth multiplier 1: output channel ch reads input channel ch only) on channel-last
 * int8 rows, the first op of MobileNet's separable block.
 * i: n_in (rows of the unpadded input), c (channels in == out), k, pad, rows_out (rows computed), phases,
 *    zp_in, zp_out, act_min, act_max
 * p: x (first halo row: pad rows of zp_in, n_in rows, pad rows), y, w (c x k, one row per channel),
 *    bias, m, shift (int8)
 *   acc = bias[ch] + sum_kk (x[t + kk][ch] - zp_in) * w[ch][kk]      (exact: |sum| <= k * 255 * 128)
 * Halo rows are written with zp_in first and output row t lands phase-major, exactly as in gemm.
 * Cost: k MACs per output byte, a simple loop (correctness first): on a Cortex-M4 about 5-6 cycles per
 * MAC (two LDRSB, one of them strided by c, SUB, MLA; no SMLAD pairing) against ~1.3 for the im2col16
 * gemm, but a depthwise layer has 1 / c_out of a dense conv's MACs, so the pointwise gemm after it
 * still dominates. */
#if HAR_WITH_DWCONV
static void dwconv(const struct har_op *op) {
    const int32_t n_in = op->i[0], c = op->i[1], k = op->i[2], pad = op->i[3], rows = op->i[4],
                  phases = op->i[5], zp_in = op->i[6], zp_out = op->i[7], lo = op->i[8], hi = op->i[9];
    int8_t *x = op->p[0], *y = op->p[1];
    const int8_t *restrict w = op->p[2];
    const int8_t *shift = op->p[5];
    const int32_t *bias = op->p[3], *m = op->p[4];
    const int32_t per = rows / phases;
    for (int32_t j = 0; j < pad * c; j++) { /* other buffers share the halo bytes between inferences */
        x[j] = (int8_t)zp_in;
        x[(pad + n_in) * c + j] = (int8_t)zp_in;
    }
    for (int32_t ph = 0; ph < phases; ph++)
        for (int32_t r = 0; r < per; r++) {
            const int8_t *restrict row = x + (ph + phases * r) * c;
            int8_t *out = y + (ph * per + r) * c;
            for (int32_t ch = 0; ch < c; ch++) {
                const int8_t *restrict wc = w + ch * k;
                int32_t a = 0;
                for (int32_t kk = 0; kk < k; kk++)
                    a += (int32_t)(int16_t)(row[kk * c + ch] - zp_in) * (int32_t)wc[kk];
                out[ch] = output(a, bias[ch], m[ch], shift[ch], zp_out, lo, hi);
            }
        }
}
#endif

/* i: rows_out, channels, kernel, phase_major; p: x, y.  Phase-major input: y is x's first block and
 * y[r] = max_j x[j * rows_out + r] in place; otherwise y[t] = max_j x[t * kernel + j]. */
static int maxpool(const struct har_op *op) {
    const int32_t rows = op->i[0], c = op->i[1], k = op->i[2], phase_major = op->i[3];
    const int8_t *x = op->p[0];
    int8_t *y = op->p[1];
    if (phase_major) {
        /* y = elementwise max of the k contiguous blocks of rows x c bytes: 4 bytes per step on DSP
         * targets (SSUB8 sets a GE flag per byte, SEL picks the larger) */
        const int32_t n = rows * c;
        int32_t j = 0;
#if defined(__ARM_FEATURE_DSP)
        for (; j + 4 <= n; j += 4) {
            int32_t best = load32(x + j);
            for (int32_t b = 1; b < k; b++) {
                const int32_t v = load32(x + b * n + j);
                (void)__ssub8(v, best);
                best = __sel(v, best);
            }
            __builtin_memcpy(y + j, &best, 4);
        }
#endif
        for (; j < n; j++) {
            int8_t best = x[j];
            for (int32_t b = 1; b < k; b++) best = x[b * n + j] > best ? x[b * n + j] : best;
            y[j] = best;
        }
        return 0;
    }
#if HAR_WITH_MAXPOOL_STRIDED
    for (int32_t r = 0; r < rows; r++)
        for (int32_t ch = 0; ch < c; ch++) {
            int8_t best = x[r * k * c + ch];
            for (int32_t j = 1; j < k; j++) {
                const int8_t v = x[(r * k + j) * c + ch];
                best = v > best ? v : best;
            }
            y[r * c + ch] = best;
        }
    return 0;
#else
    return -1;
#endif
}

/* i: length, channels, zp_in, zp_out; p: x (length x C), y (C), m (1), shift (1, int8) */
static void global_avg_pool(const struct har_op *op) {
    const int32_t length = op->i[0], c = op->i[1], zp_in = op->i[2], zp_out = op->i[3];
    const int8_t *x = op->p[0], *shift = op->p[3];
    const int32_t *m = op->p[2];
    int8_t *y = op->p[1];
    for (int32_t ch = 0; ch < c; ch++) {
        int32_t s = 0;
        for (int32_t t = 0; t < length; t++) s += x[t * c + ch];
        s -= length * zp_in; /* exact: |s| <= length * 255 (the exporter bounds length) */
        y[ch] = (int8_t)(clamp8(requantize(s, m[0], shift[0]), -128 - zp_out, 127 - zp_out) + zp_out);
    }
}

/* i: n, zp; f: scale; p: x (int8), y (float) */
#if HAR_WITH_DEQUANTIZE
static void dequantize(const struct har_op *op) {
    const int32_t n = op->i[0];
    const float zp = (float)op->i[1], scale = op->f[0];
    const int8_t *x = op->p[0];
    float *y = op->p[1];
    for (int32_t j = 0; j < n; j++) y[j] = ((float)x[j] - zp) * scale;
}
#endif

int har_op_run(const struct har_op *op) {
    switch (op->kind) {
#if HAR_WITH_QUANTIZE
    case HAR_QUANTIZE: quantize_input(op); return 0;
#endif
    case HAR_GEMM: return gemm(op);
    case HAR_MAXPOOL: return maxpool(op);
    case HAR_GAP: global_avg_pool(op); return 0;
#if HAR_WITH_DEQUANTIZE
    case HAR_DEQUANTIZE: dequantize(op); return 0;
#endif
#if HAR_WITH_DECODE
    case HAR_DECODE: return har_decode_op(op);
#endif
#if HAR_WITH_DWCONV
    case HAR_DWCONV: dwconv(op); return 0;
#endif
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
