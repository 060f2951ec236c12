/* measure_main.c: the smallest firmware that calls the library, linked without the C library's
 * start-up, printf or semihosting, so that everything else in its link map is what the
 * library pulls in (search.deploy.measure reads that map). */
#include "kws.h"

static int16_t pcm[8000];
volatile int kws_sink;

int main(void)
{
    float logits[KWS_N_CLASSES];
    kws_sink = kws_classify(pcm, sizeof pcm / sizeof pcm[0], logits);
    return 0;
}
