/* Int8 kernels of har-memopt's static-pool runtime, bit-exact with model_opts/quant/intref.py.
 *
 * One op = one `struct har_op` (kind, integer attributes, pointers into the planned arena and the
 * weights); `har_run` runs a table of them in order. Nothing here allocates: every buffer is planned
 * and owned by the caller (system_opts/buffer_pool_c.py), so the same file builds for a host shared
 * library and for a bare-metal Cortex-M (no libc beyond <stdint.h> and nearbyintf).
 * Arithmetic (TFLite int8 rules, model_opts/quant/fixedpoint.py):
 *   acc  = bias[c] + sum_j (x[j] - zp_in) * w[j][c]      int32, wrapping like the reference
 *   q    = clamp(MultiplyByQuantizedMultiplier(acc, m[c], shift[c]) + zp_out, act_min, act_max)
 * Float steps repeat numpy's order and rounding (x * inv_scale, + offset, rint; (q - zp) * scale);
 * build with -ffp-contract=off so no multiply-add is fused.
 */
#include <math.h>
#include <stdint.h>

enum { HAR_QUANTIZE = 0, HAR_GEMM = 1, HAR_MAXPOOL = 2, HAR_GAP = 3, HAR_DEQUANTIZE = 4 };

struct har_op {
    int32_t kind;
    int32_t i[12];
    float f[2];
    void *p[8];
};

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

/* i: rows, channels; p: x (float, rows x C), y (int8), inv_scale[C], offset[C] */
static void quantize_input(const struct har_op *op) {
    const int32_t rows = op->i[0], c = op->i[1];
    const float *x = op->p[0], *inv = op->p[2], *off = op->p[3];
    int8_t *y = op->p[1];
    for (int32_t t = 0; t < rows; t++)
        for (int32_t ch = 0; ch < c; ch++) {
            float v = x[t * c + ch] * inv[ch];
            v = v + off[ch];
            v = nearbyintf(v);
            v = v > -128.0f ? v : -128.0f; /* a NaN window becomes -128 */
            v = v < 127.0f ? v : 127.0f;
            y[t * c + ch] = (int8_t)v;
        }
}

static inline int8_t output(int32_t acc, int32_t bias, int32_t m, int32_t shift, int32_t zp_out, int32_t lo,
                            int32_t hi) {
    const int32_t a = (int32_t)((uint32_t)acc + (uint32_t)bias); /* wraps like the reference */
    return clamp8(requantize(a, m, shift) + zp_out, lo, hi);
}

/* Conv1d (and Linear: rows_out 1, k 1, pad 0) on channel-last int8 rows.
 * i: n_in (rows of the unpadded input), c_in, k, pad, rows_out (rows computed), c_out, phases,
 *    zp_in, zp_out, act_min, act_max
 * p: x (first halo row: pad rows of zp_in, n_in rows, pad rows), y, w (c_out x k*c_in), bias, m,
 *    shift (int8); for the time-major loop also xt (int16, c_in x (n_in + 2 pad)), acc (int32, rows_out)
 * Two loop orders, the same integers (every partial sum is exact in int32):
 * - dot (xt == NULL): output (t, c) is one dot product of the k*c_in contiguous input bytes from row
 *   t with weight row c; fast when k*c_in is long enough to fill vector registers.
 * - time-major: transpose (x - zp_in) to channel-first int16 once, then for each output channel add
 *   w[c][kk][ch] * xt[ch][t + kk] over all t at once; fast for the first layers, where k*c_in is short
 *   and T long. (x - zp_in) * w fits int16 * int16 in both.
 * Output row t lands at (t % phases) * (rows_out / phases) + t / phases: phase-major for an in-place
 * max pool of kernel `phases` after it. */
static void gemm(const struct har_op *op) {
    const int32_t n_in = op->i[0], c_in = op->i[1], k = op->i[2], pad = op->i[3], rows = op->i[4],
                  c_out = op->i[5], phases = op->i[6], zp_in = op->i[7], zp_out = op->i[8],
                  lo = op->i[9], hi = op->i[10];
    int8_t *x = op->p[0], *y = op->p[1];
    const int8_t *restrict w = op->p[2];
    const int8_t *shift = op->p[5];
    const int32_t *bias = op->p[3], *m = op->p[4];
    int16_t *restrict xt = op->p[6];
    int32_t *restrict acc = op->p[7];
    const int32_t terms = k * c_in, per = rows / phases, n_pad = n_in + 2 * pad;
    /* other buffers share the halo bytes between inferences */
    for (int32_t j = 0; j < pad * c_in; j++) {
        x[j] = (int8_t)zp_in;
        x[(pad + n_in) * c_in + j] = (int8_t)zp_in;
    }
    if (xt == 0) {
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
