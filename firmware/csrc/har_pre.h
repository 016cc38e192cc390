/* Preprocessing of har-memopt firmware: int16 accelerometer counts -> channels -> int8 model input. */
#ifndef HAR_PRE_H
#define HAR_PRE_H
#include <stdint.h>

enum { HAR_CH_RAW = 0, HAR_CH_ROBUST = 1, HAR_CH_ROBUST_TILT = 2 };

int32_t har_pre_n_channels(int32_t channel_set);

/* correctly rounded sqrtf: the FPU's where there is one, else an integer square root (no libm, no errno) */
float har_pre_sqrtf(float x);

/* Float channels (C, T) channel-major of `t` samples read from a ring of `t` interleaved x,y,z counts whose
 * oldest sample is at index `start`; `scale` is m/s^2 per count. */
void har_pre_channels_f32(const int16_t *ring, int32_t start, int32_t t, float scale, int32_t channel_set,
                          float *out_ct);

/* The same channels quantized straight into int8 rows (T, C) channel-last:
 * q = round_half_even(clamp(v * inv_scale[c] + offset[c], -128, 127)); a NaN value becomes zero_point. */
void har_pre_quantize(const int16_t *ring, int32_t start, int32_t t, float scale, int32_t channel_set,
                      const float *inv_scale, const float *offset, int32_t zero_point, int8_t *out_tc);
#endif
