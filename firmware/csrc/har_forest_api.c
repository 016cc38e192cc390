/* har_model.h's API on top of the forest (har_forest.c), so the CNN firmware's harness, QEMU runner,
 * accounting and instruction counter serve the classical peer unchanged.
 *
 * har_init      HAR_OK (the forest has no weight blob: its thresholds are immediates in the tree code).
 * har_classify  har_forest_classify of one window; `label` = the class, `scores` one-hot (1 for the label,
 *               0 elsewhere: a hard-voting forest has no logits).
 * har_push      the ring buffer of har_ring.c, as har_runtime.c: a result once HAR_T samples are in, then
 *               every HAR_STEP samples, on the ring in time order.
 * har_weights_crc32  CRC32 of the empty blob (0).
 * State: `har_ring`, `har_state` (har_ring.c); not reentrant.
 */
#include "har_model.h"
#include "har_forest.h"
#include "har_forest_model.h"
#include "har_ring.h"

uint32_t har_weights_crc32(void) { return 0u; }

int har_init(void) {
    har_reset();
    har_state.ready = 1;
    return HAR_OK;
}

static int result(int label, har_result *out) {
    if (label < 0 || label >= HAR_N_CLASSES) return HAR_ERR_RUN;
    out->label = label;
    for (int32_t k = 0; k < HAR_N_CLASSES; k++) out->scores[k] = (int8_t)(k == label);
    return HAR_READY;
}

int har_classify(const int16_t *xyz, har_result *out) {
    if (!har_state.ready) return HAR_ERR_STATE;
    if (xyz == 0 || out == 0) return HAR_ERR_ARG;
    const int rc = result(har_forest_classify(xyz, HAR_T, HAR_SAMPLE_SCALE, HAR_FOREST_CHANNEL_SET), out);
    return rc == HAR_READY ? HAR_OK : rc;
}

int har_push(const int16_t xyz[3], har_result *out) {
    if (!har_state.ready) return HAR_ERR_STATE;
    if (xyz == 0 || out == 0) return HAR_ERR_ARG;
    const int32_t start = har_ring_push(xyz);
    return start < 0 ? HAR_OK : result(har_forest_classify_ring(har_ring, start, HAR_SAMPLE_SCALE), out);
}
