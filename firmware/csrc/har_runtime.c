/* Runtime of har-memopt firmware: weight check, ring buffer, streaming API (har_model.h).
 *
 * har_init   CRC32 (IEEE 802.3, reflected polynomial 0xEDB88320, init and final xor 0xFFFFFFFF, bitwise:
 *            no table in flash) over the bytes of `har_weights`; a mismatch with the CRC the exporter
 *            computed refuses every later call (HAR_ERR_STATE) and returns HAR_ERR_CRC.
 * har_push   stores one x,y,z sample in the ring (har_ring.c: HAR_T samples, oldest overwritten); once
 *            HAR_T samples are in, and then every HAR_STEP samples, runs one inference on the ring in time
 *            order — the windows `har.windows.make_windows` cuts from a continuous segment.
 * har_classify  one window given as HAR_T interleaved samples, independent of the ring.
 * Inference: har_pre_quantize (har_pre.c) writes the int8 input rows into the arena, har_run (har_int8.c)
 * runs the op table, the label is the argmax of the int8 logits (ties: the lowest class, as numpy).
 * State lives in `har_state` and `har_ring` (har_ring.c; static, no malloc); not reentrant.
 */
#include "har_model.h"
#include "har_model_data.h"
#include "har_int8.h"
#include "har_pre.h"
#include "har_ring.h"

uint32_t har_weights_crc32(void) {
    const uint8_t *p = (const uint8_t *)&har_weights;
    uint32_t crc = 0xFFFFFFFFu;
    for (uint32_t n = 0; n < (uint32_t)sizeof har_weights; n++) {
        crc ^= p[n];
        for (int32_t b = 0; b < 8; b++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return crc ^ 0xFFFFFFFFu;
}

int har_init(void) {
    har_reset();
    har_state.ready = 0;
    if (har_weights_crc32() != HAR_WEIGHTS_CRC32) return HAR_ERR_CRC;
    har_state.ready = 1;
    return HAR_OK;
}

static int infer(const int16_t *ring, int32_t start, har_result *out) {
    har_pre_quantize(ring, start, HAR_T, HAR_SAMPLE_SCALE, HAR_CHANNEL_SET, HAR_INV_SCALE, HAR_OFFSET,
                     HAR_INPUT_ZERO_POINT, har_arena + HAR_INPUT_OFFSET);
    if (har_run(har_ops, HAR_N_OPS) != 0) return HAR_ERR_RUN;
    const int8_t *logits = har_arena + HAR_LOGITS_OFFSET;
    int32_t best = 0;
    for (int32_t k = 0; k < HAR_N_CLASSES; k++) {
        out->scores[k] = logits[k];
        if (logits[k] > logits[best]) best = k;
    }
    out->label = best;
    return HAR_READY;
}

int har_classify(const int16_t *xyz, har_result *out) {
    if (!har_state.ready) return HAR_ERR_STATE;
    if (xyz == 0 || out == 0) return HAR_ERR_ARG;
    const int rc = infer(xyz, 0, out);
    return rc == HAR_READY ? HAR_OK : rc;
}

int har_push(const int16_t xyz[3], har_result *out) {
    if (!har_state.ready) return HAR_ERR_STATE;
    if (xyz == 0 || out == 0) return HAR_ERR_ARG;
    const int32_t start = har_ring_push(xyz);
    return start < 0 ? HAR_OK : infer(har_ring, start, out);
}
