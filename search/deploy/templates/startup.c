/* startup.c: minimal Cortex-M4 start-up for QEMU's mps2-an386 board (test harness only; not
 * part of the library, and not counted in its flash or RAM). */
#include <stdint.h>

extern uint32_t __stack_top;
int main(void);
#ifndef KWS_BARE
void _start(void); /* newlib's crt0 (rdimon.specs): sets up the C library, calls main, exits */
#endif

void Reset_Handler(void)
{
    /* Enable the FPU (CP10 and CP11 full access) before any float instruction runs. */
    *(volatile uint32_t *)0xE000ED88 |= 0xFu << 20;
    __asm volatile("dsb\n\tisb");
#ifdef KWS_BARE
    (void)main();
    for (;;) {
    }
#else
    _start();
#endif
}

static void Fault_Handler(void)
{
    for (;;) {
    }
}

__attribute__((section(".isr_vector"), used)) const void *const kws_vectors[16] = {
    &__stack_top, (const void *)Reset_Handler, (const void *)Fault_Handler, (const void *)Fault_Handler,
    (const void *)Fault_Handler, (const void *)Fault_Handler, (const void *)Fault_Handler, 0, 0, 0, 0,
    (const void *)Fault_Handler, (const void *)Fault_Handler, 0, (const void *)Fault_Handler, (const void *)Fault_Handler,
};
