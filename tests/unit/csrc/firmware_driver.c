/* Host driver of an exported firmware library for the sanitizer test: reads windows.bin (uint32 n, uint32 t,
 * n * t * 3 int16) from argv[1], classifies every window (har_classify) and streams them all back to back
 * (har_push), writing label + scores per result to argv[2] and argv[3]. Exit 0 when every call succeeded. */
#include <stdio.h>
#include <stdlib.h>

#include "har_model.h"

static int write_result(FILE *f, const har_result *r) {
    const signed char label = (signed char)r->label;
    return fwrite(&label, 1, 1, f) == 1 && fwrite(r->scores, 1, HAR_N_CLASSES, f) == HAR_N_CLASSES;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb"), *stream = fopen(argv[3], "wb");
    if (!in || !out || !stream) return 3;
    unsigned int header[2];
    if (fread(header, 4, 2, in) != 2 || header[1] != HAR_T) return 4;
    const size_t n = header[0], values = (size_t)n * HAR_T * 3;
    int16_t *xyz = malloc(values * sizeof *xyz);
    if (!xyz || fread(xyz, 2, values, in) != values) return 5;
    if (har_init() != HAR_OK) return 6;
    har_result r;
    for (size_t i = 0; i < n; i++) {
        if (har_classify(xyz + i * HAR_T * 3, &r) != HAR_OK || !write_result(out, &r)) return 7;
    }
    har_reset();
    for (size_t s = 0; s < (size_t)n * HAR_T; s++) {
        const int rc = har_push(xyz + s * 3, &r);
        if (rc < 0) return 8;
        if (rc == HAR_READY && !write_result(stream, &r)) return 9;
    }
    if (har_classify(0, &r) != HAR_ERR_ARG) return 10;
    free(xyz);
    return fclose(in) | fclose(out) | fclose(stream);
}
