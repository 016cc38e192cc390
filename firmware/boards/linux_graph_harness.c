/* Linux harness of a graph library (har_graph_model.h), for 64-bit Arm boards (Raspberry Pi class) and
   their emulation under qemu-aarch64: the same file protocol as graph_harness.c, through stdio.
   argv[1] = inputs.bin (uint32 n, uint32 bytes per input, n int8 inputs), argv[2] = outputs.bin.
   Exit: 0 ok, 2 CRC mismatch, 3 library error, 4 IO error, 5 input size mismatch. */
#include <stdint.h>
#include <stdio.h>
#include "har_graph_model.h"

int main(int argc, char **argv) {
    if (argc != 3) return 4;
    if (har_g_init() != 0) return 2;
    FILE *fin = fopen(argv[1], "rb"), *fout = fopen(argv[2], "wb");
    if (!fin || !fout) return 4;
    uint32_t header[2];
    if (fread(header, sizeof header, 1, fin) != 1) return 4;
    if (header[1] != (uint32_t)HAR_G_INPUT_BYTES) return 5;
    for (uint32_t k = 0; k < header[0]; k++) {
        if (fread(har_g_input(), 1, HAR_G_INPUT_BYTES, fin) != (size_t)HAR_G_INPUT_BYTES) return 4;
        if (har_g_invoke() < 0) return 3;
        if (fwrite(har_g_output(), 1, HAR_G_OUTPUT_BYTES, fout) != (size_t)HAR_G_OUTPUT_BYTES) return 4;
    }
    return fclose(fin) || fclose(fout) ? 4 : 0;
}
