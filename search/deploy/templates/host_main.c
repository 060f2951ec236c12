/* host_main.c: host test program. `./kws_host FILE.wav...` classifies each file and prints one
 * line per clip: "NAME PRED L0 .. L9", the logits as the hex bits of their float32 values (exact).
 * A file it cannot use is named on stderr in one line, "error: FILE: reason" (exit status 2). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kws.h"

/* The wav reader: the rules, the order of the checks and the messages of fsdd.audio.wav_layout and
 * read_wav, so that this program and the numpy reference read the same samples or refuse a file
 * for the same reason. Chunks are walked from byte 12 to the end of the file, each padded to an
 * even size; the first data chunk after the fmt chunk holds the samples. A RIFF or data size of
 * 0, 0x7FFFF000 or 0xFFFFFFFF (a writer streaming to a pipe) means "to the end of the file".
 * 16-bit PCM only (WAVE_FORMAT_PCM or EXTENSIBLE with the PCM subformat, 9 to 16 bits in 2-byte
 * samples, as libsndfile reads them), any channel count, the header's block align ignored (as
 * libsndfile does), mixed down in integers: mono = floor(sum of the channels' samples / channels). */
#define MAX_CLIP_SECONDS 30 /* fsdd.audio.MAX_CLIP_SECONDS */
#define MAX_CHANNELS 1024   /* fsdd.audio.MAX_CHANNELS (libsndfile's limit) */
#define CONVERT "`ffmpeg -i IN -ar 8000 -c:a pcm_s16le OUT.wav` or `sox IN -r 8000 -b 16 OUT.wav`"

/* A KSDATAFORMAT_SUBTYPE_* GUID: the format tag (2 bytes), then these 14 bytes. */
static const unsigned char GUID_TAIL[14] = {0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xaa, 0, 0x38, 0x9b, 0x71};

static unsigned long le(const unsigned char *p, int n)
{
    unsigned long v = 0;
    while (n--) v = (v << 8) | p[n];
    return v;
}

/* A RIFF chunk id: 4 printable ASCII characters. */
static int is_id(const unsigned char *p)
{
    int k;
    for (k = 0; k < 4; k++)
        if (p[k] < 0x20 || p[k] > 0x7e) return 0;
    return 1;
}

static int unknown_size(unsigned long v)
{
    return v == 0UL || v == 0x7ffff000UL || v == 0xffffffffUL;
}

static long refuse(FILE *f, const char *path, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "error: %s: ", path);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    if (f != NULL) fclose(f);
    return -1;
}

/* The encodings libsndfile decodes in a wav (fsdd.audio._FORMATS); any other is refused. */
static const struct { long tag; const char *name; } FORMATS[] = {
    {0x0001, "PCM"}, {0x0002, "MS ADPCM"}, {0x0003, "float"}, {0x0006, "A-law"}, {0x0007, "mu-law"},
    {0x0011, "IMA ADPCM"}, {0x0031, "GSM 6.10"}, {0x0038, "NMS ADPCM"}, {0x0040, "G.721 ADPCM"}, {0x0055, "MP3"},
};
#define N_FORMATS (sizeof FORMATS / sizeof FORMATS[0])

static int known_format(long tag)
{
    size_t k;
    for (k = 0; k < N_FORMATS; k++)
        if (FORMATS[k].tag == tag) return 1;
    return 0;
}

/* The encoding in words, as fsdd.audio.WavLayout.describe. */
static void describe(char *buf, size_t len, long tag, unsigned bits)
{
    size_t k;
    for (k = 0; k < N_FORMATS; k++) {
        if (FORMATS[k].tag == tag) {
            if (tag == 0x0001 || tag == 0x0003) snprintf(buf, len, "%u-bit %s", bits, FORMATS[k].name);
            else snprintf(buf, len, "%s", FORMATS[k].name);
            return;
        }
    }
    if (tag < 0) snprintf(buf, len, "an unknown WAVE_FORMAT_EXTENSIBLE subformat");
    else snprintf(buf, len, "format 0x%04lx", (unsigned long)tag);
}

/* Reads a wav into *out (n mono 16-bit samples, n >= 1, malloc'd); returns n, or -1 after naming
 * the file and the reason on stderr in one line. */
static long read_wav(const char *path, int16_t **out)
{
    static const struct { const char *magic; size_t len; const char *kind; } magics[] = {
        {"fLaC", 4, "FLAC"}, {"OggS", 4, "Ogg"}, {"FORM", 4, "AIFF"}, {"RF64", 4, "RF64"},
        {"RIFX", 4, "big-endian RIFX"}, {"ID3", 3, "MP3"}, {"caff", 4, "CAF"}, {".snd", 4, "AU"},
    };
    unsigned char head[12], hdr[8], fmt[40], *frame;
    long long size, pos = 12, data_off = -1, data_bytes = 0, riff, odd_pos = -1;
    unsigned long fmt_size = 0, rate, odd_size = 0;
    char odd_id[4];
    unsigned channels, bits, c;
    long tag, frames, i;
    int unknown = 0, k;
    size_t got;
    char what[64];
    FILE *f;

    errno = 0;
    f = fopen(path, "rb");
    if (f == NULL) return refuse(NULL, path, "cannot read wav (%s)", strerror(errno));
    got = fread(head, 1, 12, f);
    if (ferror(f)) return refuse(f, path, "cannot read wav (%s)", strerror(errno ? errno : EIO));
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0) return refuse(f, path, "cannot read wav (%s)", strerror(errno ? errno : EIO));
    if (got < 12 || memcmp(head, "RIFF", 4) || memcmp(head + 8, "WAVE", 4)) {
        for (k = 0; k < (int)(sizeof magics / sizeof magics[0]); k++)
            if (got >= magics[k].len && !memcmp(head, magics[k].magic, magics[k].len))
                return refuse(f, path, "not a RIFF/WAVE file (%s data: convert it, e.g. %s)", magics[k].kind, CONVERT);
        return refuse(f, path, "not a RIFF/WAVE file");
    }
    riff = (long long)le(head + 4, 4);
    while (pos + 8 <= size) {
        unsigned long n;
        long long end;
        const char *problem = NULL;
        if (fseek(f, (long)pos, SEEK_SET) != 0 || fread(hdr, 1, 8, f) != 8)
            return refuse(f, path, "cannot read wav (%s)", strerror(errno ? errno : EIO));
        n = le(hdr + 4, 4);
        end = pos + 8 + (long long)n;
        if (!is_id(hdr)) problem = "id";
        else if (end > size && !(!memcmp(hdr, "data", 4) && unknown_size(n))) problem = "end";
        if (problem != NULL) {
            unsigned char early[4];
            if (odd_pos >= 0 && fseek(f, (long)(pos - 1), SEEK_SET) == 0 && fread(early, 1, 4, f) == 4 && is_id(early))
                return refuse(f, path, "corrupt wav (its '%.4s' chunk at byte %lld has an odd size, %lu, and no pad byte after it)",
                              odd_id, odd_pos, odd_size);
            if (problem[0] == 'i')
                return refuse(f, path, "corrupt wav (no chunk id at byte %lld: a chunk before it has a wrong size)", pos);
            return refuse(f, path, "truncated wav (%lld bytes on disk, its '%.4s' chunk ends at byte %lld)", size, (const char *)hdr, end);
        }
        if (!memcmp(hdr, "data", 4)) {
            if (fmt_size == 0) return refuse(f, path, "corrupt wav (data chunk before the fmt chunk)");
            data_off = pos + 8;
            unknown = unknown_size(n);
            data_bytes = unknown ? size - data_off : (long long)n;
            break;
        }
        if (!memcmp(hdr, "fmt ", 4)) {
            if (fmt_size != 0) return refuse(f, path, "corrupt wav (a second fmt chunk at byte %lld)", pos);
            if (n < 16) return refuse(f, path, "corrupt wav (fmt chunk of %lu bytes, expected at least 16)", n);
            if (fread(fmt, 1, n < 40 ? n : 40, f) != (n < 40 ? n : 40))
                return refuse(f, path, "cannot read wav (%s)", strerror(errno ? errno : EIO));
            fmt_size = n;
        }
        odd_pos = (n & 1) ? pos : -1;
        memcpy(odd_id, hdr, 4);
        odd_size = n;
        pos = end + (long long)(n & 1);
    }
    if (!unknown && !unknown_size((unsigned long)riff) && riff + 8 > size + (size & 1))
        return refuse(f, path, "truncated wav (%lld bytes on disk, header says %lld)", size, riff + 8);
    if (data_off < 0) return refuse(f, path, "corrupt wav (no %s chunk)", fmt_size ? "data" : "fmt");
    tag = (long)le(fmt, 2);
    channels = (unsigned)le(fmt + 2, 2);
    rate = le(fmt + 4, 4);
    bits = (unsigned)le(fmt + 14, 2);
    if (tag == 0xfffe) {
        if (fmt_size < 40)
            return refuse(f, path, "corrupt wav (WAVE_FORMAT_EXTENSIBLE fmt chunk of %lu bytes, expected at least 40)", fmt_size);
        tag = memcmp(fmt + 26, GUID_TAIL, 14) ? -1 : (long)le(fmt + 24, 2);
    }
    if (channels == 0) return refuse(f, path, "corrupt wav (its fmt chunk says 0 channels)");
    if (channels > MAX_CHANNELS) return refuse(f, path, "%u channels, more than %d", channels, MAX_CHANNELS);
    if (!known_format(tag) || (tag == 0x0001 && (bits < 1 || bits > 32)) || (tag == 0x0003 && (bits + 7) / 8 != 4 && (bits + 7) / 8 != 8)) {
        describe(what, sizeof what, tag, bits);
        return refuse(f, path, "unsupported encoding (%s): convert it, e.g. %s", what, CONVERT);
    }
    if (rate != KWS_SAMPLE_RATE)
        return refuse(f, path, "sample rate %lu Hz, expected %d Hz (resample it first, e.g. `sox in.wav -r %d out.wav`)", rate,
                      KWS_SAMPLE_RATE, KWS_SAMPLE_RATE);
    if (tag != 0x0001 || bits < 9 || bits > 16) {
        describe(what, sizeof what, tag, bits);
        return refuse(f, path, "%s, not 16-bit PCM: this program reads 16-bit PCM only (search.deploy --check converts other encodings);"
                      " convert it, e.g. %s", what, CONVERT);
    }
    frames = (long)(data_bytes / (2LL * channels));
    if (frames == 0) return refuse(f, path, "wav holds no samples");
    if (frames > (long)MAX_CLIP_SECONDS * KWS_SAMPLE_RATE)
        return refuse(f, path, "%.1f s long, over %d s: a clip holds one spoken digit (cut it first)", (double)frames / KWS_SAMPLE_RATE,
                      MAX_CLIP_SECONDS);
    *out = malloc(sizeof(int16_t) * (size_t)frames);
    frame = malloc(2 * (size_t)channels);
    if (*out == NULL || frame == NULL) {
        free(*out);
        free(frame);
        *out = NULL;
        return refuse(f, path, "out of memory");
    }
    if (fseek(f, (long)data_off, SEEK_SET) != 0) frames = 0;
    for (i = 0; i < frames; i++) {
        long s = 0, q;
        if (fread(frame, 1, 2 * (size_t)channels, f) != 2 * (size_t)channels) break;
        for (c = 0; c < channels; c++) {
            long v = (long)le(frame + 2 * c, 2);
            s += v >= 32768 ? v - 65536 : v;
        }
        q = s / (long)channels; /* C truncates toward zero: make it the floor */
        if (q * (long)channels > s) q -= 1;
        (*out)[i] = (int16_t)q;
    }
    free(frame);
    if (i < frames) {
        free(*out);
        *out = NULL;
        return refuse(f, path, "cannot read wav (%s)", strerror(errno ? errno : EIO));
    }
    fclose(f);
    return frames;
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
