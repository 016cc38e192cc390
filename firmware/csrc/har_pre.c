/* Preprocessing of har-memopt firmware, bit-exact with firmware/preprocess.py (numpy, float32).
 *
 * The rule that makes C and numpy agree bit for bit: every value is float32, every operation is one IEEE
 * operation (+ - * / sqrt: correctly rounded on x86-64 SSE, the Cortex-M4 FPU and libgcc's soft float) in the
 * fixed order written below, nothing is fused (-ffp-contract=off) or reassociated (no -ffast-math), and the
 * only reduction, the per-axis sum for gravity, is done exactly in int32 on the raw counts. Steps per window
 * of T samples (counts c[t][k], scale s):
 *   g[k]  = ((float)sum_t c[t][k] * s) / (float)T                   gravity estimate (window mean)
 *   n     = max(sqrtf((g0*g0 + g1*g1) + g2*g2), 1e-6f);  u[k] = g[k] / n
 *   a[k]  = (float)c[t][k] * s                                    per sample, m/s^2
 *   raw:   a0, a1, a2
 *   robust: v = (a0*u0 + a1*u1) + a2*u2;  m = sqrtf((a0*a0 + a1*a1) + a2*a2);
 *           h = sqrtf(max(m*m - v*v, 0));  channels v, h, m
 *   robust_tilt: robust + |u0|, |u1|, |u2| (constant over the window)
 * These are har/windows.py's channels (which compute in float32/64 with numpy's pairwise sums): the two
 * differ in the last bits, so a channel value can land one int8 step apart; the firmware's accuracy is
 * measured on its own outputs, never assumed equal.
 * Quantization (har_q8 in har_int8.h, the kernels' input quantizer): v * inv_scale[c] + offset[c], NaN ->
 * zero point, clamp to [-128, 127], round half to even. Int16 counts cannot produce NaN or Inf here (every
 * step above is finite: n >= 1e-6, h2 >= 0), so the NaN test is skipped (har_q8_finite).
 * No allocation, no libc, no libm: sqrt is the FPU's (one VSQRT on the M4F, SQRTSS on x86-64: IEEE correctly
 * rounded) or, without an FPU (M0+), `soft_sqrtf` below: the same correctly rounded result by integer
 * square root (newlib's sqrtf would pull in errno).
 */
#include "har_pre.h"
#include "har_int8.h"

#if !defined(HAR_SOFT_SQRT) && (defined(__ARM_FP) || defined(__x86_64__) || defined(__aarch64__))
#define har_sqrtf(x) __builtin_sqrtf(x)
#else
/* floor(sqrt(v)) and v - floor(sqrt(v))^2, bit by bit */
static uint32_t isqrt64(uint64_t v, uint64_t *rem) {
    uint64_t r = 0, bit = (uint64_t)1 << 62;
    while (bit > v) bit >>= 2;
    while (bit) {
        if (v >= r + bit) {
            v -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
        bit >>= 2;
    }
    *rem = v;
    return (uint32_t)r;
}

/* IEEE sqrt, round to nearest, for any float: x = m * 2^E (m < 2^24); scale m by 2^24 or 2^23 so the
 * exponent is even and r = isqrt(M) has exactly 24 bits; round up when M - r^2 > r (a square root is never
 * exactly halfway between two floats). */
static float soft_sqrtf(float x) {
    union { float f; uint32_t u; } v; /* type pun through a union (C99 TC3): no memcpy call on the M0+ */
    v.f = x;
    const uint32_t ix = v.u;
    const uint32_t sign = ix >> 31, be = (ix >> 23) & 0xFF;
    uint32_t m = ix & 0x7FFFFF;
    if (be == 0xFF) return sign && m == 0 ? (x - x) / (x - x) : x; /* NaN stays, +Inf stays, -Inf -> NaN */
    if ((ix & 0x7FFFFFFF) == 0) return x;                            /* +-0 */
    if (sign) return (x - x) / (x - x);                              /* negative -> NaN */
    int32_t e = (int32_t)be - 150;
    if (be == 0) { /* subnormal: normalise */
        e = -149;
        while (!(m & 0x800000)) {
            m <<= 1;
            e--;
        }
    } else {
        m |= 0x800000;
    }
    const int32_t odd = e & 1;
    const uint64_t big = (uint64_t)m << (odd ? 23 : 24);
    int32_t re = (e - (odd ? 23 : 24)) / 2;
    uint64_t rem;
    uint32_t r = isqrt64(big, &rem);
    if (rem > r) r++;
    if (r == (1u << 24)) {
        r >>= 1;
        re++;
    }
    v.u = ((uint32_t)(re + 23 + 127) << 23) | (r & 0x7FFFFF);
    return v.f;
}
#define har_sqrtf(x) soft_sqrtf(x)
#endif

float har_pre_sqrtf(float x) { return har_sqrtf(x); }

int32_t har_pre_n_channels(int32_t channel_set) { return channel_set == HAR_CH_ROBUST_TILT ? 6 : 3; }

struct gravity {
    float u[3];
};

static struct gravity unit_gravity(const int16_t *ring, int32_t t, float scale) {
    int32_t sum[3] = {0, 0, 0};
    for (int32_t i = 0; i < t; i++)
        for (int32_t k = 0; k < 3; k++) sum[k] += ring[i * 3 + k]; /* |sum| <= t * 32768: exact */
    float g[3];
    for (int32_t k = 0; k < 3; k++) g[k] = ((float)sum[k] * scale) / (float)t;
    float n = har_sqrtf((g[0] * g[0] + g[1] * g[1]) + g[2] * g[2]);
    n = n > 1e-6f ? n : 1e-6f;
    struct gravity out;
    for (int32_t k = 0; k < 3; k++) out.u[k] = g[k] / n;
    return out;
}

/* the channels of one sample into v[0..C-1] */
static void sample_channels(const int16_t *c, float scale, int32_t set, const struct gravity *g, float *v) {
    const float a0 = (float)c[0] * scale, a1 = (float)c[1] * scale, a2 = (float)c[2] * scale;
    if (set == HAR_CH_RAW) {
        v[0] = a0;
        v[1] = a1;
        v[2] = a2;
        return;
    }
    const float vert = (a0 * g->u[0] + a1 * g->u[1]) + a2 * g->u[2];
    const float mag = har_sqrtf((a0 * a0 + a1 * a1) + a2 * a2);
    float h2 = mag * mag - vert * vert;
    h2 = h2 > 0.0f ? h2 : 0.0f;
    v[0] = vert;
    v[1] = har_sqrtf(h2);
    v[2] = mag;
    if (set == HAR_CH_ROBUST_TILT)
        for (int32_t k = 0; k < 3; k++) v[3 + k] = __builtin_fabsf(g->u[k]);
}

void har_pre_channels_f32(const int16_t *ring, int32_t start, int32_t t, float scale, int32_t channel_set,
                          float *out_ct) {
    const struct gravity g = unit_gravity(ring, t, scale);
    const int32_t n_ch = har_pre_n_channels(channel_set);
    float v[6];
    for (int32_t i = 0, j = start; i < t; i++, j = j + 1 == t ? 0 : j + 1) {
        sample_channels(ring + j * 3, scale, channel_set, &g, v);
        for (int32_t ch = 0; ch < n_ch; ch++) out_ct[ch * t + i] = v[ch];
    }
}

void har_pre_quantize(const int16_t *ring, int32_t start, int32_t t, float scale, int32_t channel_set,
                      const float *inv_scale, const float *offset, int32_t zero_point, int8_t *out_tc) {
    (void)zero_point; /* what har_q8 maps NaN to; no NaN can arise from int16 counts */
    const struct gravity g = unit_gravity(ring, t, scale);
    const int32_t n_ch = har_pre_n_channels(channel_set);
    int8_t tilt[3] = {0, 0, 0}; /* robust_tilt: channels 3..5 are constant over the window, quantized once */
    if (channel_set == HAR_CH_ROBUST_TILT)
        for (int32_t k = 0; k < 3; k++) {
            float q = __builtin_fabsf(g.u[k]) * inv_scale[3 + k];
            q = q + offset[3 + k];
            tilt[k] = har_q8_finite(q);
        }
    const int32_t set = channel_set == HAR_CH_ROBUST_TILT ? HAR_CH_ROBUST : channel_set;
    float v[6];
    for (int32_t i = 0, j = start; i < t; i++, j = j + 1 == t ? 0 : j + 1) {
        sample_channels(ring + j * 3, scale, set, &g, v);
        int8_t *row = out_tc + i * n_ch;
        for (int32_t ch = 0; ch < 3; ch++) {
            float q = v[ch] * inv_scale[ch];
            q = q + offset[ch];
            row[ch] = har_q8_finite(q);
        }
        for (int32_t ch = 3; ch < n_ch; ch++) row[ch] = tilt[ch - 3];
    }
}
