/* host_main.c: host test program. `./kws_host FILE.wav...` classifies each file and prints one
 * line per clip: "NAME PRED L0 .. L9", the logits as the hex bits of their float32 values (exact). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kws.h"

static unsigned le(const unsigned char *p, int n)
{
    unsigned v = 0;
    while (n--) v = (v << 8) | p[n];
    return v;
}

/* A small RIFF/WAVE reader for 16-bit mono PCM at KWS_SAMPLE_RATE, the model's input; anything
 * else is refused (a library does not resample or mix down). Returns the sample count, or -1. */
static long read_wav(const char *path, int16_t **out)
{
    FILE *f = fopen(path, "rb");
    unsigned char head[12], chunk[8], fmt[16];
    long n = -1;
    int have_fmt = 0;
    if (f == NULL) {
        fprintf(stderr, "error: %s: cannot open\n", path);
        return -1;
    }
    if (fread(head, 1, 12, f) != 12 || memcmp(head, "RIFF", 4) || memcmp(head + 8, "WAVE", 4)) {
        fprintf(stderr, "error: %s: not a RIFF/WAVE file\n", path);
        goto done;
    }
    while (fread(chunk, 1, 8, f) == 8) {
        unsigned size = le(chunk + 4, 4);
        if (!memcmp(chunk, "fmt ", 4)) {
            if (size < 16 || fread(fmt, 1, 16, f) != 16) break;
            if (le(fmt, 2) != 1 || le(fmt + 2, 2) != 1 || le(fmt + 4, 4) != KWS_SAMPLE_RATE || le(fmt + 14, 2) != 16) {
                fprintf(stderr, "error: %s: not 16-bit mono PCM at %d Hz\n", path, KWS_SAMPLE_RATE);
                goto done;
            }
            have_fmt = 1;
            fseek(f, (long)(size - 16 + (size & 1)), SEEK_CUR);
        } else if (!memcmp(chunk, "data", 4) && have_fmt) {
            long i, count = (long)(size / 2);
            unsigned char *raw = malloc(size ? size : 1);
            *out = malloc(sizeof(int16_t) * (size_t)(count ? count : 1));
            if (raw == NULL || *out == NULL || fread(raw, 1, size, f) != size) {
                fprintf(stderr, "error: %s: truncated wav\n", path);
                free(raw);
                goto done;
            }
            for (i = 0; i < count; i++) (*out)[i] = (int16_t)le(raw + 2 * i, 2);
            free(raw);
            n = count;
            goto done;
        } else {
            fseek(f, (long)(size + (size & 1)), SEEK_CUR);
        }
    }
    fprintf(stderr, "error: %s: no PCM data\n", path);
done:
    fclose(f);
    return n;
}

static void print_result(const char *name, int pred, const float *logits)
{
    int k;
    printf("%s %d", name, pred);
    for (k = 0; k < KWS_N_CLASSES; k++) {
        uint32_t bits;
        memcpy(&bits, &logits[k], 4);
        printf(" %08lx", (unsigned long)bits);
    }
    printf("\n");
}

int main(int argc, char **argv)
{
    int i, status = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE.wav...\n", argv[0]);
        return 2;
    }
    for (i = 1; i < argc; i++) {
        int16_t *pcm = NULL;
        float logits[KWS_N_CLASSES];
        const char *name = strrchr(argv[i], '/');
        long n = read_wav(argv[i], &pcm);
        if (n < 0) {
            status = 2;
            continue;
        }
        print_result(name ? name + 1 : argv[i], kws_classify(pcm, (size_t)n, logits), logits);
        free(pcm);
    }
    return status;
}
