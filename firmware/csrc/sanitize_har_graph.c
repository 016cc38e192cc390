/* Sanitizer driver of the graph kernels (har_graph.c), built with ASan + UBSan (firmware/hygiene.py
 * FLAGS) by tests/unit/test_graph_sanitizers.py.
 *
 * argv[1] = a program file, all little-endian:
 *   uint32 n_ops, blob_bytes, arena_bytes, input_offset, input_bytes, output_offset, output_bytes, n_inputs
 *   int32 ops[n_ops * HAR_G_OP_WORDS], uint8 blob[blob_bytes], int8 inputs[n_inputs * input_bytes]
 * argv[2] = where the n_inputs * output_bytes int8 outputs go.
 * The blob and the arena are malloc'ed with EXACTLY the bytes the program declares (no slack), so any read
 * or write outside them is an ASan finding; UBSan catches overflow, shifts and misaligned access. Any
 * finding aborts (exit != 0); a run with none exits 0 and the test compares the outputs with the
 * integer reference. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "har_graph.h"

static void *read_exact(FILE *f, size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p || fread(p, 1, n, f) != n) {
        fprintf(stderr, "sanitize_har_graph: truncated program\n");
        exit(4);
    }
    return p;
}

int main(int argc, char **argv) {
    if (argc != 3) return 4;
    FILE *f = fopen(argv[1], "rb");
    if (!f) return 4;
    uint32_t h[8];
    if (fread(h, sizeof h, 1, f) != 1) return 4;
    int32_t *ops = read_exact(f, (size_t)h[0] * HAR_G_OP_WORDS * 4u);
    uint8_t *blob = read_exact(f, h[1]);
    int8_t *inputs = read_exact(f, (size_t)h[7] * h[4]);
    fclose(f);
    uint8_t *arena = malloc(h[2] ? h[2] : 1);
    int8_t *outputs = malloc((size_t)h[7] * h[6] + 1u);
    FILE *out = fopen(argv[2], "wb");
    if (!arena || !outputs || !out) return 4;
    for (uint32_t k = 0; k < h[7]; k++) {
        memset(arena, 0xA5, h[2]); /* stale bytes: a kernel reading before writing would show in outputs */
        memcpy(arena + h[3], inputs + (size_t)k * h[4], h[4]);
        if (har_g_run(ops, (int32_t)h[0], blob, arena)) return 3;
        memcpy(outputs + (size_t)k * h[6], arena + h[5], h[6]);
    }
    if (fwrite(outputs, 1, (size_t)h[7] * h[6], out) != (size_t)h[7] * h[6]) return 4;
    fclose(out);
    free(ops);
    free(blob);
    free(inputs);
    free(arena);
    free(outputs);
    return 0;
}
