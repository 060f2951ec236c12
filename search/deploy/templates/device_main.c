/* device_main.c: QEMU test program. Classifies the clips compiled into kws_clips.c and prints
 * one line per clip as host_main.c does, and "ticks NAME T": the 25 MHz ticks of the board's
 * CMSDK timer 0 that the call took (under `-icount shift=0` QEMU runs one instruction per ns,
 * so instructions = 40 T, to within 40); then "stack BYTES": the deepest stack that
 * kws_classify used over all clips, measured by painting the stack before each call. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kws.h"
#include "kws_clips.h"

#define PAINT_BYTES 16384u
#define PAINT 0xA5C3E18Fu
#define TIMER0 ((volatile uint32_t *)0x40000000u) /* mps2-an386 CMSDK APB timer 0: CTRL, VALUE, RELOAD */

/* Paint the 16 KiB below the stack pointer, call the library, and find the lowest word it
 * changed. Inline, with no call between reading sp and calling kws_classify, so that no
 * frame of ours lies in the painted region. */
__attribute__((noinline)) static int classify(const kws_clip_t *clip, float *logits, uint32_t *stack, uint32_t *ticks)
{
    uint32_t *sp, *p, t0;
    int pred;
    __asm volatile("mov %0, sp" : "=r"(sp));
    for (p = sp - PAINT_BYTES / 4; p < sp; p++) *p = PAINT;
    TIMER0[2] = 0xFFFFFFFFu; /* counts down from the reload value */
    TIMER0[1] = 0xFFFFFFFFu;
    TIMER0[0] = 1u;
    t0 = TIMER0[1];
    pred = kws_classify(clip->pcm, clip->n, logits);
    *ticks = t0 - TIMER0[1];
    for (p = sp - PAINT_BYTES / 4; p < sp && *p == PAINT; p++) {
    }
    *stack = (uint32_t)((char *)sp - (char *)p);
    return pred;
}

int main(void)
{
    uint32_t i, worst = 0;
    for (i = 0; i < KWS_N_CLIPS; i++) {
        float logits[KWS_N_CLASSES];
        uint32_t stack, ticks, k;
        int pred = classify(&kws_clips[i], logits, &stack, &ticks);
        if (stack > worst) worst = stack;
        printf("%s %d", kws_clips[i].name, pred);
        for (k = 0; k < KWS_N_CLASSES; k++) {
            uint32_t bits;
            memcpy(&bits, &logits[k], 4);
            printf(" %08lx", (unsigned long)bits);
        }
        printf("\n");
        printf("ticks %s %lu\n", kws_clips[i].name, (unsigned long)ticks);
    }
    printf("stack %lu\n", (unsigned long)worst);
    return 0;
}
