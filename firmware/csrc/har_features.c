/* Window statistics of the classical peer: har/features.py `window_stats` in float32, freestanding C.
 *
 * Per channel (t samples x[0..t-1]), in window_stats' order (all channels' means, then all stds, ...):
 *   mean   m = x0 + (sum_i (x_i - x0)) / t. Summing deviations from the first sample makes a constant
 *          channel (the tilt channels of robust_tilt) come out exactly x0 with exactly zero deviations,
 *          as numpy's float64 mean does (there the sum of t float32 copies is exact); a plain float32 sum
 *          would leave rounding noise that the spectral features below would turn into arbitrary values.
 *   std    sqrtf(sum_i (x_i - m)^2 / t)                            (population, numpy's ddof=0)
 *   min, max, and the 10/25/50/75/90th percentiles: from the sorted window. Sorting is an insertion sort
 *          of the values' order keys (har_float_key: integer compares, exact) in a static buffer of
 *          HAR_FEATURES_MAX_T int32 (no allocation, O(t^2) worst case). Percentile p: numpy's default
 *          "linear" rule, index p (t-1) / 100 split exactly in integers into lo and gamma; the value is
 *          a + (b - a) gamma, or b - (b - a)(1 - gamma) when gamma >= 0.5 (numpy's _lerp).
 *   mad    sum_i |x_{i+1} - x_i| / (t - 1)                        (mean absolute first difference)
 *   spectrum  P_k = |DFT(x - m)_k|^2 for k = 1..t/2 (numpy: rfft bins without bin 0); features are
 *          argmax_k P_k - 1 (first maximum, as numpy's argmax) and max P / (sum P + 1e-12). Direct DFT,
 *          O(t^2/2) per channel, with a twiddle table cos/sin(2 pi m / t), m = 0..t-1 (static scratch), so
 *          every product uses the exact angle index (k n) mod t rather than a drifting recurrence. A channel
 *          whose deviations are all exactly 0 skips the DFT: its powers are all 0, so argmax 0, share 0.
 *          cos/sin without libm: the nearest quarter turn q is taken in integers (r = 4m - q t, exact), the
 *          remainder angle r (pi/2) / t lies in [-pi/4, pi/4] where Taylor polynomials to degree 9 (sin)
 *          and 10 (cos) are below float32 rounding, then the quarter turn is applied by symmetry.
 * Then the Pearson correlations of channels (0,1), (0,2), (1,2): sum c_i c_j / (sd_i sd_j) with
 * c = x - m and sd = sqrtf(sum c^2) + 1e-12.
 * Accuracy: every sum is a float32 left-to-right sum, numpy's are float64 (pairwise), so features agree
 * to float32 rounding of the sums (relative ~1e-6 for t = 40), not bit for bit; the spectral argmax can
 * differ where two bins' powers tie to that precision. Host and Cortex-M builds agree bit for bit: every
 * step is one IEEE float operation in a fixed order (-ffp-contract=off, no -ffast-math), sqrt is the FPU's
 * (VSQRT, SQRTSS) or, without one, har_pre_sqrtf (har_pre.c): both correctly rounded; no libm call.
 * Not reentrant: the scratch is static.
 */
#include "har_features.h"
#include "har_pre.h"

#if !defined(HAR_SOFT_SQRT) && (defined(__ARM_FP) || defined(__x86_64__) || defined(__aarch64__))
#define feat_sqrtf(x) __builtin_sqrtf(x)
#else
#define feat_sqrtf(x) har_pre_sqrtf(x) /* har_pre.c's integer square root: correctly rounded, no libm */
#endif

/* the sorted window's keys, then (after the percentiles are read) the deviations x - m for the DFT */
static union {
    int32_t key[HAR_FEATURES_MAX_T];
    float dev[HAR_FEATURES_MAX_T];
} scratch;
static float tw_cos[HAR_FEATURES_MAX_T];
static float tw_sin[HAR_FEATURES_MAX_T];

#define PI_2_F 1.57079632679489661923f

/* cos and sin of 2 pi m / t, 0 <= m < t */
static void twiddle(int32_t m, int32_t t, float *c_out, float *s_out) {
    const int32_t q = (8 * m + t) / (2 * t);     /* nearest quarter turn: round(4 m / t) */
    const float a = ((float)(4 * m - q * t) * PI_2_F) / (float)t; /* |a| <= pi / 4 */
    const float a2 = a * a;
    const float s = a + a * a2 * (-1.6666667e-1f + a2 * (8.3333333e-3f + a2 * (-1.9841270e-4f + a2 * 2.7557319e-6f)));
    const float c = 1.0f + a2 * (-0.5f + a2 * (4.1666667e-2f + a2 * (-1.3888889e-3f + a2 * (2.4801587e-5f
                                                                                           + a2 * -2.7557319e-7f))));
    switch (q & 3) {
    case 0: *c_out = c; *s_out = s; break;
    case 1: *c_out = -s; *s_out = c; break;
    case 2: *c_out = -c; *s_out = -s; break;
    default: *c_out = s; *s_out = -c; break;
    }
}

static float window_mean(const float *x, int32_t t) {
    float sum = 0.0f;
    for (int32_t i = 1; i < t; i++) sum += x[i] - x[0];
    return x[0] + sum / (float)t;
}

/* numpy's linear percentile of the sorted keys, p in percent */
static float percentile(const int32_t *sorted, int32_t t, int32_t p) {
    const int32_t num = p * (t - 1);
    const int32_t lo = num / 100;
    const float gamma = (float)(num - lo * 100) / 100.0f;
    const float a = har_key_float(sorted[lo]);
    if (lo + 1 >= t) return a;
    const float b = har_key_float(sorted[lo + 1]);
    const float d = b - a;
    return gamma >= 0.5f ? b - d * (1.0f - gamma) : a + d * gamma;
}

static void sort_window(const float *x, int32_t t) {
    for (int32_t i = 0; i < t; i++) {
        const int32_t k = har_float_key(x[i]);
        int32_t j = i;
        for (; j > 0 && scratch.key[j - 1] > k; j--) scratch.key[j] = scratch.key[j - 1];
        scratch.key[j] = k;
    }
}

/* dominant bin index (0-based after dropping bin 0) and its share of the spectral energy, of the
 * deviations d = x - m */
static void spectrum(const float *d, int32_t t, float *argmax_out, float *share_out) {
    float best = 0.0f, energy = 0.0f;
    int32_t best_k = 1;
    for (int32_t k = 1; k <= t / 2; k++) {
        float re = 0.0f, im = 0.0f;
        for (int32_t n = 0, j = 0; n < t; n++) {
            re += d[n] * tw_cos[j];
            im += d[n] * tw_sin[j];
            j += k;
            if (j >= t) j -= t;
        }
        const float pw = re * re + im * im;
        energy += pw;
        if (k == 1 || pw > best) {
            best = pw;
            best_k = k;
        }
    }
    *argmax_out = (float)(best_k - 1);
    *share_out = best / (energy + 1e-12f);
}

int32_t har_features(const float *ch_ct, int32_t n_channels, int32_t t, float *out) {
    static const int32_t pct[5] = {10, 25, 50, 75, 90};
    if (t < 2 || t > HAR_FEATURES_MAX_T || n_channels < 3) return -1;
    for (int32_t m = 0; m < t; m++) twiddle(m, t, &tw_cos[m], &tw_sin[m]);
    const int32_t nc = n_channels;
    float mean3[3], sd3[3];
    for (int32_t c = 0; c < nc; c++) {
        const float *x = ch_ct + c * t;
        const float m = window_mean(x, t);
        float ss = 0.0f, mad = 0.0f;
        int32_t varies = 0;
        for (int32_t i = 0; i < t; i++) {
            const float d = x[i] - m;
            ss += d * d;
            varies |= d != 0.0f;
        }
        for (int32_t i = 1; i < t; i++) {
            const float d = x[i] - x[i - 1];
            mad += d < 0.0f ? -d : d;
        }
        sort_window(x, t);
        out[c] = m;
        out[nc + c] = feat_sqrtf(ss / (float)t);
        out[2 * nc + c] = har_key_float(scratch.key[0]);
        out[3 * nc + c] = har_key_float(scratch.key[t - 1]);
        out[4 * nc + c] = mad / (float)(t - 1);
        for (int32_t j = 0; j < 5; j++) out[7 * nc + 5 * c + j] = percentile(scratch.key, t, pct[j]);
        if (varies) {
            for (int32_t i = 0; i < t; i++) scratch.dev[i] = x[i] - m;
            spectrum(scratch.dev, t, &out[5 * nc + c], &out[6 * nc + c]);
        } else { /* all deviations exactly 0 (a tilt channel): every power is 0, as the DFT would give */
            out[5 * nc + c] = 0.0f;
            out[6 * nc + c] = 0.0f;
        }
        if (c < 3) {
            mean3[c] = m;
            sd3[c] = feat_sqrtf(ss) + 1e-12f;
        }
    }
    static const int32_t pair[3][2] = {{0, 1}, {0, 2}, {1, 2}};
    for (int32_t p = 0; p < 3; p++) {
        const float *a = ch_ct + pair[p][0] * t, *b = ch_ct + pair[p][1] * t;
        const float ma = mean3[pair[p][0]], mb = mean3[pair[p][1]];
        float s = 0.0f;
        for (int32_t i = 0; i < t; i++) s += (a[i] - ma) * (b[i] - mb);
        out[12 * nc + p] = s / (sd3[pair[p][0]] * sd3[pair[p][1]]);
    }
    return 0;
}

int32_t har_features_n_channels(int32_t channel_set) {
    return har_pre_n_channels(channel_set) + (channel_set == HAR_CH_RAW);
}

int32_t har_features_channels(const int16_t *ring, int32_t start, int32_t t, float scale, int32_t channel_set,
                              float *ch_ct) {
    har_pre_channels_f32(ring, start, t, scale, channel_set, ch_ct);
    if (channel_set == HAR_CH_RAW) {
        float *mag = ch_ct + 3 * t;
        for (int32_t i = 0; i < t; i++) {
            const float a0 = ch_ct[i], a1 = ch_ct[t + i], a2 = ch_ct[2 * t + i];
            mag[i] = feat_sqrtf((a0 * a0 + a1 * a1) + a2 * a2);
        }
    }
    return har_features_n_channels(channel_set);
}
