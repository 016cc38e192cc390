/* Cortex-M startup: the 16-entry core vector table and Reset_Handler.
   Reset: SP = _stack_top (the core also loads it from vector 0), copy .data from its flash load image,
   zero .bss, enable the FPU when the build uses one (__ARM_FP; without CPACR access the first float
   instruction faults), run main and exit through semihosting with main's return code.
   Every fault/unexpected exception prints one line and exits 99, so a crash is never a hang. */
#include <stdint.h>
#include "semihost.h"

extern uint32_t _sidata[], _sdata[], _edata[], _sbss[], _ebss[], _stack_top[];
int main(void);

static void __attribute__((noreturn)) Fault_Handler(void) {
    sh_write0("FAULT: unexpected exception\n");
    sh_exit(99);
}

void __attribute__((noreturn, used)) reset_c(void) {
    const uint32_t *src = _sidata;
    uint32_t *dst = _sdata;
    while (dst < _edata) *dst++ = *src++;
    for (dst = _sbss; dst < _ebss;) *dst++ = 0;
#if defined(__ARM_FP)
    *(volatile uint32_t *)0xE000ED88u |= (0xFu << 20); /* CPACR: full access to CP10/CP11 */
    __asm__ volatile("dsb\n isb\n" ::: "memory");
#endif
    sh_exit(main());
}

void __attribute__((noreturn, naked)) Reset_Handler(void) {
    /* set SP again: we may be entered by a debugger or loader that did not load vector 0 */
    __asm__ volatile("ldr r0, =_stack_top\n mov sp, r0\n b reset_c\n");
}

__attribute__((section(".vectors"), used)) void (*const har_vectors[16])(void) = {
    (void (*)(void))_stack_top, Reset_Handler,
    Fault_Handler /* NMI */, Fault_Handler /* HardFault */, Fault_Handler /* MemManage */,
    Fault_Handler /* BusFault */, Fault_Handler /* UsageFault */, 0, 0, 0, 0,
    Fault_Handler /* SVCall */, Fault_Handler /* DebugMonitor */, 0,
    Fault_Handler /* PendSV */, Fault_Handler /* SysTick */,
};
