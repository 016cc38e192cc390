/* The classical peer's firmware entry points: int16 accelerometer counts -> window statistics -> forest. */
#ifndef HAR_FOREST_H
#define HAR_FOREST_H
#include <stdint.h>

/* Class label of one window of `t` samples, x,y,z interleaved int16 counts, `scale` m/s^2 per count;
 * -1 unless t and channel_set are the ones the forest was trained for (HAR_FOREST_T, _CHANNEL_SET). */
int har_forest_classify(const int16_t *xyz, int32_t t, float scale, int32_t channel_set);
/* The same on a ring of HAR_FOREST_T samples whose oldest sample is at index `start`. */
int har_forest_classify_ring(const int16_t *ring, int32_t start, float scale);
/* The forest's input for one window (HAR_FOREST_N_FEATURES floats), for host-side checks; 0 or -1. */
int har_forest_window_features(const int16_t *xyz, int32_t t, float scale, int32_t channel_set, float *out);
#endif
