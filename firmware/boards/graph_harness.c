/* The TEST firmware of a graph library (har_graph_model.h): runs it on inputs from the host through
   semihosting files in QEMU's working directory.

   1. har_g_init(): a weights/op-table CRC mismatch -> exit 2.
   2. inputs.bin = uint32 n, uint32 bytes per input (!= HAR_G_INPUT_BYTES -> exit 5), then n int8 inputs
      (channel-last H, W, C), read straight into the library's input tensor (har_g_input()).
   3. Per input: paint the stack below main's frame, har_g_invoke() (< 0 -> exit 3), record the lowest
      overwritten stack word, append HAR_G_OUTPUT_BYTES int8 outputs to outputs.bin.
   4. stack.txt = the deepest stack any invoke used, in bytes (decimal). Exit 0; 4 on any IO error.
   The paint and scan run inline in main's frame, so only the library call touches the painted words. */
#include <stdint.h>
#include "har_graph_model.h"
#include "semihost.h"

#define PAINT 0x5AA5C33Cu
extern uint32_t _stack_bottom[];

static inline __attribute__((always_inline)) uint32_t *stack_pointer(void) {
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    return sp;
}

static void put_decimal(int32_t fd, uint32_t v) {
    char text[12];
    int32_t k = 11;
    text[k] = '\n';
    do {
        text[--k] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    (void)sh_write(fd, text + k, (uint32_t)(12 - k));
}

int main(void) {
    if (har_g_init() != 0) return 2;
    const int32_t fin = sh_open("inputs.bin", SH_MODE_RB);
    if (fin < 0) return 4;
    uint32_t header[2];
    if (sh_read(fin, header, sizeof header)) return 4;
    if (header[1] != (uint32_t)HAR_G_INPUT_BYTES) return 5;
    const int32_t fout = sh_open("outputs.bin", SH_MODE_WB);
    if (fout < 0) return 4;
    uint32_t deepest = 0;
    for (uint32_t k = 0; k < header[0]; k++) {
        if (sh_read(fin, har_g_input(), (uint32_t)HAR_G_INPUT_BYTES)) return 4;
        uint32_t *top = stack_pointer() - 16; /* leave main's own spill slots alone */
        for (uint32_t *p = _stack_bottom; p < top; p++) *p = PAINT;
        if (har_g_invoke() < 0) return 3;
        uint32_t *low = _stack_bottom;
        while (low < top && *low == PAINT) low++;
        const uint32_t used = (uint32_t)((uint8_t *)(top + 16) - (uint8_t *)low);
        deepest = used > deepest ? used : deepest;
        if (sh_write(fout, har_g_output(), (uint32_t)HAR_G_OUTPUT_BYTES)) return 4;
    }
    (void)sh_close(fin);
    (void)sh_close(fout);
    const int32_t fs = sh_open("stack.txt", SH_MODE_WB);
    if (fs < 0) return 4;
    put_decimal(fs, deepest);
    (void)sh_close(fs);
    return 0;
}
