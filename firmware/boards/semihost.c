/* Semihosting calls (see semihost.h). Each call passes its arguments as a word block in memory; the
   "memory" clobber makes the compiler store the block before the trap and re-read buffers after it. */
#include "semihost.h"

static int32_t sh_call(int32_t op, const void *arg) {
    register int32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

int32_t sh_open(const char *name, int32_t mode) {
    uint32_t len = 0;
    while (name[len]) len++;
    uint32_t block[3] = {(uint32_t)(uintptr_t)name, (uint32_t)mode, len};
    return sh_call(SYS_OPEN, block);
}

int32_t sh_close(int32_t handle) {
    uint32_t block[1] = {(uint32_t)handle};
    return sh_call(SYS_CLOSE, block);
}

uint32_t sh_read(int32_t handle, void *buf, uint32_t n_bytes) {
    uint32_t block[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)buf, n_bytes};
    return (uint32_t)sh_call(SYS_READ, block);
}

uint32_t sh_write(int32_t handle, const void *buf, uint32_t n_bytes) {
    uint32_t block[3] = {(uint32_t)handle, (uint32_t)(uintptr_t)buf, n_bytes};
    return (uint32_t)sh_call(SYS_WRITE, block);
}

void sh_write0(const char *text) { sh_call(SYS_WRITE0, text); }

void sh_exit(int32_t code) {
    /* SYS_EXIT_EXTENDED takes {reason, subcode}; QEMU exits with status `subcode` */
    uint32_t block[2] = {ADP_Stopped_ApplicationExit, (uint32_t)code};
    sh_call(SYS_EXIT_EXTENDED, block);
    for (;;) {}
}
