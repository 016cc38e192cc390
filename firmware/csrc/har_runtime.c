/* Runtime of har-memopt firmware: weight check, ring buffer, streaming API (har_model.h).
 *
 * har_init   CRC32 (IEEE 802.3, reflected polynomial 0xEDB88320, init and final xor 0xFFFFFFFF, bitwise:
 *            no table in flash) over the bytes of `har_weights` and over the op table's integer and float
 *            fields, and every op pointer inside the arena or the weights; any mismatch with what the
 *            exporter computed refuses every later call (HAR_ERR_STATE) and returns HAR_ERR_CRC.
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

#include <stdint.h>

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, uint32_t n) {
    for (uint32_t k = 0; k < n; k++) {
        crc ^= p[k];
        for (int32_t b = 0; b < 8; b++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return crc;
}

uint32_t har_weights_crc32(void) {
    return crc32_update(0xFFFFFFFFu, (const uint8_t *)&har_weights, (uint32_t)sizeof har_weights) ^ 0xFFFFFFFFu;
}

/* CRC32 of the op table's kind, integer and float fields (60 bytes per op; the pointers are link-time
 * addresses the exporter cannot know, so they are range-checked instead) */
static uint32_t ops_crc32(void) {
    uint32_t crc = 0xFFFFFFFFu;
    for (int32_t j = 0; j < HAR_N_OPS; j++) {
        const struct har_op *op = har_ops + j;
        crc = crc32_update(crc, (const uint8_t *)&op->kind, 4);
        crc = crc32_update(crc, (const uint8_t *)op->i, (uint32_t)sizeof op->i);
        crc = crc32_update(crc, (const uint8_t *)op->f, (uint32_t)sizeof op->f);
    }
    return crc ^ 0xFFFFFFFFu;
}

/* every op pointer lies inside the arena or the weights (compared as integers: C orders pointers only
 * within one object) */
static int pointers_ok(void) {
    const uintptr_t a0 = (uintptr_t)har_arena, a1 = a0 + HAR_ARENA_BYTES;
    const uintptr_t w0 = (uintptr_t)&har_weights, w1 = w0 + sizeof har_weights;
    for (int32_t j = 0; j < HAR_N_OPS; j++)
        for (int32_t k = 0; k < 8; k++) {
            const uintptr_t v = (uintptr_t)har_ops[j].p[k];
            if (v != 0 && !((v >= a0 && v < a1) || (v >= w0 && v < w1))) return 0;
        }
    return 1;
}

int har_init(void) {
    har_reset();
    har_state.ready = 0;
    if (har_weights_crc32() != HAR_WEIGHTS_CRC32 || ops_crc32() != HAR_OPS_CRC32 || !pointers_ok())
        return HAR_ERR_CRC;
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
