/* The TEST firmware: runs the exported library on windows from the host, through semihosting files in
   QEMU's working directory, using only the public API of har_model.h.

   1. Paint the stack region [_stack_bottom, SP of main) with PAINT.
   2. har_init(): HAR_ERR_CRC -> exit 2, any other error -> exit 3.
   3. windows.bin = uint32 n, uint32 t (t != HAR_T -> exit 5), n windows of HAR_T*3 int16 (x,y,z per
      sample), all little-endian. Read a few windows at a time, har_classify() each, append
      label (int8) + HAR_N_CLASSES int8 scores per window to scores.bin.
   4. If stream.bin exists (uint32 n_samples, then samples as above): har_reset(), har_push() every sample,
      append the same record to stream_scores.bin for every HAR_READY.
   5. stack.txt = the library's stack depth in bytes (decimal): SP of main minus the lowest stack word
      any library call overwrote.
   Exit codes: 0 ok, 2 CRC, 3 library error (<0 from any call), 4 file/IO error, 5 window length
   mismatch, 6 the stack overflowed the painted region, 99 fault (startup.c).

   Stack measurement, why this way: the harness's own IO calls also use stack below main's SP. So before
   every batch of library calls the harness repaints what IO dirtied, and after the batch it records the
   lowest overwritten word; only library calls run between the two. All library calls are made from
   main itself (so their stack starts at main's SP) and the paint/scan code is always_inline (it runs in
   main's frame, so it never dirties the painted region). A word the library reserved but never wrote
   cannot be seen (a painted measurement's limit). */
#include <stdint.h>
#include "har_model.h"
#include "semihost.h"

#define EXIT_CRC 2
#define EXIT_LIB 3
#define EXIT_IO 4
#define EXIT_SHAPE 5
#define EXIT_STACK 6

#ifndef HARNESS_IO_BYTES
#define HARNESS_IO_BYTES 2048 /* sample buffer; small enough for a 16 KiB RAM board */
#endif
#define SAMPLE_BYTES 6u
#define WINDOW_BYTES ((uint32_t)HAR_T * SAMPLE_BYTES)
#define CHUNK_WINDOWS (WINDOW_BYTES >= HARNESS_IO_BYTES ? 1u : HARNESS_IO_BYTES / WINDOW_BYTES)
#define CHUNK_SAMPLES (CHUNK_WINDOWS * (uint32_t)HAR_T)
#define RECORD_BYTES (1u + (uint32_t)HAR_N_CLASSES)
#define STREAM_RECORDS (CHUNK_SAMPLES / (uint32_t)HAR_STEP + 1u)
#define RECORD_CAP (STREAM_RECORDS > CHUNK_WINDOWS ? STREAM_RECORDS : CHUNK_WINDOWS)
#define PAINT 0x5AA5C33Cu /* four different bytes: no byte-wise memset can produce it */

extern uint32_t _stack_bottom[];

static int16_t samples[CHUNK_SAMPLES * 3u];
static uint8_t records[RECORD_CAP * RECORD_BYTES];
static uint32_t *paint_top; /* main's SP: every library call's stack starts here */
static uint32_t *lib_low;   /* lowest stack word a library call has overwritten so far */

static inline __attribute__((always_inline)) uint32_t *first_dirty(void) {
    uint32_t *p = _stack_bottom;
    /* eight words a step: the scan runs twice per batch, and an emulator pays per branch taken */
    while (p + 8 <= paint_top && ((p[0] ^ PAINT) | (p[1] ^ PAINT) | (p[2] ^ PAINT) | (p[3] ^ PAINT) |
                                  (p[4] ^ PAINT) | (p[5] ^ PAINT) | (p[6] ^ PAINT) | (p[7] ^ PAINT)) == 0)
        p += 8;
    while (p < paint_top && *p == PAINT) p++;
    return p;
}

/* before a batch of library calls: repaint whatever the harness's IO calls overwrote */
static inline __attribute__((always_inline)) int lib_begin(void) {
    uint32_t *p = first_dirty();
    if (p == _stack_bottom && p < paint_top) return 0;
    while (p < paint_top) *p++ = PAINT;
    return 1;
}

/* after a batch: remember the deepest word the library overwrote */
static inline __attribute__((always_inline)) int lib_end(void) {
    uint32_t *p = first_dirty();
    if (p == _stack_bottom && p < paint_top) return 0;
    if (p < lib_low) lib_low = p;
    return 1;
}

static inline __attribute__((always_inline)) void pack(uint8_t *rec, const har_result *r) {
    rec[0] = (uint8_t)(int8_t)r->label;
    for (uint32_t k = 0; k < (uint32_t)HAR_N_CLASSES; k++) rec[1 + k] = (uint8_t)r->scores[k];
}

static int fail(int code, const char *why) {
    sh_write0("harness: ");
    sh_write0(why);
    sh_write0("\n");
    return code;
}

static uint32_t decimal(uint32_t v, char *out) { /* no division: M0 has no divide instruction */
    static const uint32_t pow10[10] = {1000000000u, 100000000u, 10000000u, 1000000u, 100000u,
                                       10000u, 1000u, 100u, 10u, 1u};
    uint32_t n = 0;
    for (uint32_t k = 0; k < 10u; k++) {
        char d = '0';
        while (v >= pow10[k]) { v -= pow10[k]; d++; }
        if (d != '0' || n || k == 9u) out[n++] = d;
    }
    out[n++] = '\n';
    return n;
}

int main(void) {
    har_result res;
    uint32_t *sp;
    int rc;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    paint_top = sp;
    lib_low = sp;
    for (uint32_t *p = _stack_bottom; p < paint_top; p++) *p = PAINT;

    rc = har_init();
    if (!lib_end()) return fail(EXIT_STACK, "stack overflow in har_init");
    if (rc == HAR_ERR_CRC) return fail(EXIT_CRC, "har_init: weights CRC mismatch");
    if (rc != HAR_OK) return fail(EXIT_LIB, "har_init failed");

    uint32_t header[2];
    int32_t in = sh_open("windows.bin", SH_MODE_RB);
    if (in < 0) return fail(EXIT_IO, "cannot open windows.bin");
    if (sh_read(in, header, sizeof header) != 0) return fail(EXIT_IO, "windows.bin: short header");
    if (header[1] != (uint32_t)HAR_T) return fail(EXIT_SHAPE, "windows.bin: window length != HAR_T");
    int32_t out = sh_open("scores.bin", SH_MODE_WB);
    if (out < 0) return fail(EXIT_IO, "cannot create scores.bin");
    for (uint32_t done = 0; done < header[0];) {
        uint32_t m = header[0] - done;
        if (m > CHUNK_WINDOWS) m = CHUNK_WINDOWS;
        if (sh_read(in, samples, m * WINDOW_BYTES) != 0) return fail(EXIT_IO, "windows.bin: truncated");
        if (!lib_begin()) return fail(EXIT_STACK, "stack overflow in IO");
        for (uint32_t i = 0; i < m; i++) {
            rc = har_classify(&samples[i * (uint32_t)HAR_T * 3u], &res);
            if (rc < 0) return fail(EXIT_LIB, "har_classify failed");
            pack(&records[i * RECORD_BYTES], &res);
        }
        if (!lib_end()) return fail(EXIT_STACK, "stack overflow in har_classify");
        if (sh_write(out, records, m * RECORD_BYTES) != 0) return fail(EXIT_IO, "scores.bin: write failed");
        done += m;
    }
    if (sh_close(in) != 0 || sh_close(out) != 0) return fail(EXIT_IO, "close failed");

    in = sh_open("stream.bin", SH_MODE_RB);
    if (in >= 0) {
        uint32_t n_samples, n_rec = 0;
        if (sh_read(in, &n_samples, sizeof n_samples) != 0) return fail(EXIT_IO, "stream.bin: short header");
        out = sh_open("stream_scores.bin", SH_MODE_WB);
        if (out < 0) return fail(EXIT_IO, "cannot create stream_scores.bin");
        if (!lib_begin()) return fail(EXIT_STACK, "stack overflow in IO");
        har_reset();
        if (!lib_end()) return fail(EXIT_STACK, "stack overflow in har_reset");
        for (uint32_t done = 0; done < n_samples;) {
            uint32_t m = n_samples - done;
            if (m > CHUNK_SAMPLES) m = CHUNK_SAMPLES;
            if (sh_read(in, samples, m * SAMPLE_BYTES) != 0) return fail(EXIT_IO, "stream.bin: truncated");
            if (!lib_begin()) return fail(EXIT_STACK, "stack overflow in IO");
            for (uint32_t i = 0; i < m; i++) {
                rc = har_push(&samples[3u * i], &res);
                if (rc < 0) return fail(EXIT_LIB, "har_push failed");
                if (rc != HAR_READY) continue;
                pack(&records[n_rec * RECORD_BYTES], &res);
                if (++n_rec == RECORD_CAP) { /* only if the library reports more often than HAR_STEP */
                    if (!lib_end()) return fail(EXIT_STACK, "stack overflow in har_push");
                    if (sh_write(out, records, n_rec * RECORD_BYTES) != 0) return fail(EXIT_IO, "write failed");
                    n_rec = 0;
                    if (!lib_begin()) return fail(EXIT_STACK, "stack overflow in IO");
                }
            }
            if (!lib_end()) return fail(EXIT_STACK, "stack overflow in har_push");
            if (n_rec && sh_write(out, records, n_rec * RECORD_BYTES) != 0)
                return fail(EXIT_IO, "stream_scores.bin: write failed");
            n_rec = 0;
            done += m;
        }
        if (sh_close(in) != 0 || sh_close(out) != 0) return fail(EXIT_IO, "close failed");
    }

    char text[12];
    uint32_t n = decimal((uint32_t)((uintptr_t)paint_top - (uintptr_t)lib_low), text);
    out = sh_open("stack.txt", SH_MODE_WB);
    if (out < 0 || sh_write(out, text, n) != 0 || sh_close(out) != 0) return fail(EXIT_IO, "stack.txt failed");
    return 0;
}
