/* ARM semihosting by hand (Thumb `bkpt 0xAB`; r0 = operation, r1 = pointer to its argument block; result in r0).
   Only the calls the board files use. Under QEMU (`-semihosting-config enable=on,target=native`) files are
   opened relative to QEMU's working directory; the same calls are emulated by firmware/icount.py. */
#ifndef HAR_SEMIHOST_H
#define HAR_SEMIHOST_H
#include <stdint.h>

#define SYS_OPEN 0x01
#define SYS_CLOSE 0x02
#define SYS_WRITE0 0x04
#define SYS_WRITE 0x05
#define SYS_READ 0x06
#define SYS_EXIT_EXTENDED 0x20
#define ADP_Stopped_ApplicationExit 0x20026

/* SYS_OPEN modes (ISO C fopen mode index) */
#define SH_MODE_RB 1
#define SH_MODE_WB 5
#define SH_MODE_AB 9

int32_t sh_open(const char *name, int32_t mode);        /* handle, or -1 when the file cannot be opened */
int32_t sh_close(int32_t handle);                       /* 0 on success */
uint32_t sh_read(int32_t handle, void *buf, uint32_t n_bytes);        /* bytes NOT read (0 = all read) */
uint32_t sh_write(int32_t handle, const void *buf, uint32_t n_bytes); /* bytes NOT written (0 = all) */
void sh_write0(const char *text);                       /* NUL-terminated text to the debug console (stderr) */
void sh_exit(int32_t code) __attribute__((noreturn));   /* QEMU exits with status `code` */
#endif
