/* The classical peer's inference: window -> channels (har_pre.c) -> statistics (har_features.c) -> trees.
 *
 * Steps of har_forest_classify_ring:
 * 1. har_features_channels: the firmware's float32 channels of the window (plus |a| for the raw set).
 * 2. har_features: window_stats' statistics of those channels (HAR_FOREST_N_FEATURES floats).
 * 3. Each feature becomes its order key (har_float_key, in place): the generated trees compare keys with
 *    integer thresholds that firmware.forest derived from sklearn's float64 thresholds, so that
 *    key < threshold_key is exactly sklearn's float32-feature test x <= threshold (no float compare, no
 *    rounding of the threshold, and cheap on a core without an FPU).
 * 4. har_forest_model_predict (emlearn's inline C): one hard vote per tree, the most voted class
 *    (ties: the lowest class index), mapped to the dataset's label by HAR_FOREST_LABELS.
 * Memory: one static `har_arena` (channels, then features/keys); no allocation. Not reentrant.
 */
#include "har_forest.h"
#include "har_features.h"
#include "har_forest_model.h"

#if HAR_FEATURES_MAX_T < HAR_FOREST_T
#error "build with -DHAR_FEATURES_MAX_T=HAR_FOREST_T (har_features' scratch is smaller than the window)"
#endif

struct har_forest_arena {
    float ch[HAR_FOREST_N_STAT_CHANNELS * HAR_FOREST_T];
    union {
        float f[HAR_FOREST_N_FEATURES];
        int32_t key[HAR_FOREST_N_FEATURES];
    } feat;
};
struct har_forest_arena har_arena;

static const int32_t labels[HAR_FOREST_N_CLASSES] = HAR_FOREST_LABELS;

static int features(const int16_t *ring, int32_t start, float scale) {
    const int32_t n = har_features_channels(ring, start, HAR_FOREST_T, scale, HAR_FOREST_CHANNEL_SET, har_arena.ch);
    return har_features(har_arena.ch, n, HAR_FOREST_T, har_arena.feat.f);
}

int har_forest_classify_ring(const int16_t *ring, int32_t start, float scale) {
    if (features(ring, start, scale) != 0) return -1;
    for (int32_t i = 0; i < HAR_FOREST_N_FEATURES; i++) har_arena.feat.key[i] = har_float_key(har_arena.feat.f[i]);
    const int32_t k = har_forest_model_predict(har_arena.feat.key, HAR_FOREST_N_FEATURES);
    return k >= 0 && k < HAR_FOREST_N_CLASSES ? labels[k] : -1;
}

int har_forest_classify(const int16_t *xyz, int32_t t, float scale, int32_t channel_set) {
    if (xyz == 0 || t != HAR_FOREST_T || channel_set != HAR_FOREST_CHANNEL_SET) return -1;
    return har_forest_classify_ring(xyz, 0, scale);
}

int har_forest_window_features(const int16_t *xyz, int32_t t, float scale, int32_t channel_set, float *out) {
    if (xyz == 0 || out == 0 || t != HAR_FOREST_T || channel_set != HAR_FOREST_CHANNEL_SET) return -1;
    if (features(xyz, 0, scale) != 0) return -1;
    for (int32_t i = 0; i < HAR_FOREST_N_FEATURES; i++) out[i] = har_arena.feat.f[i];
    return 0;
}
