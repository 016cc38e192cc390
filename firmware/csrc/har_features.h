/* Window statistics of har-memopt's classical peer (har/features.py `window_stats`) in float32 C. */
#ifndef HAR_FEATURES_H
#define HAR_FEATURES_H
#include <stdint.h>

/* Longest window the static scratch (sort keys and DFT twiddles: 12 bytes per sample) is sized for;
 * the forest firmware builds with -DHAR_FEATURES_MAX_T=<its window length>. */
#ifndef HAR_FEATURES_MAX_T
#define HAR_FEATURES_MAX_T 256
#endif
#define HAR_FEATURES_PER_CHANNEL 12
/* features of n statistics channels (for the raw set, n includes the appended magnitude) */
#define HAR_FEATURES_N(n_channels) ((n_channels) * HAR_FEATURES_PER_CHANNEL + 3)

/* Statistics of `n_channels` channels of `t` samples, channel-major (ch_ct[c * t + i]), into
 * out[HAR_FEATURES_N(n_channels)] in window_stats' order. Returns 0, or -1 (out untouched) unless
 * 2 <= t <= HAR_FEATURES_MAX_T and n_channels >= 3. Not reentrant (static scratch). */
int32_t har_features(const float *ch_ct, int32_t n_channels, int32_t t, float *out);

/* Statistics channels of one window: har_pre_channels_f32 of the `t` interleaved x,y,z counts in `ring`
 * (oldest at `start`), plus the magnitude sqrtf((x*x + y*y) + z*z) as a 4th channel for the raw set
 * (window_stats appends it). ch_ct holds har_features_n_channels(channel_set) * t floats.
 * Returns the number of channels. */
int32_t har_features_channels(const int16_t *ring, int32_t start, int32_t t, float scale, int32_t channel_set,
                              float *ch_ct);
int32_t har_features_n_channels(int32_t channel_set);

/* An int32 whose order is the order of the float values (not NaN): the sign-magnitude bits turned into
 * two's complement, with -0 first made +0 (x + 0.0f) so that equal floats give equal keys. Lets the
 * percentile sort and the forest's threshold tests run as integer compares (exact, and cheap on a core
 * without an FPU). */
static inline int32_t har_float_key(float v) {
    union { float f; int32_t i; } u;
    u.f = v + 0.0f;
    return u.i < 0 ? (int32_t)(u.i ^ 0x7FFFFFFF) : u.i;
}
static inline float har_key_float(int32_t k) {
    union { float f; int32_t i; } u;
    u.i = k < 0 ? (int32_t)(k ^ 0x7FFFFFFF) : k;
    return u.f;
}
#endif
