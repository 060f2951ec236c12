/* kws.c: the classifier of kws.h, over the tables and packed weights of kws_model.c.
 *
 * The computation is docs/artifact.md sections 4 and 5 of the tinykws-search project, in
 * float32, one frame at a time: no frame, spectrum or feature matrix is ever stored. The
 * clip is read in up to four passes: the silence-trim bounds (frame energies), the clip's
 * loudest mel energy (for the top_db clamp), the per-coefficient mean and variance (for
 * CMVN), and the pass that feeds the LSTM. Each pass recomputes the spectrum of every frame:
 * cycles are traded for RAM. Passes that the model's settings do not need are compiled out. */
#include "kws.h"
#include "kws_model.h"

#include <math.h> /* sqrtf: the FPU instruction with -fno-math-errno */

#if !KWS_DFT
#include "dsp/transform_functions.h"
#include "arm_common_tables.h"

/* CMSIS-DSP's arm_cfft_f32 chooses among three kernels by the length at run time, so a separately
 * compiled copy links all three (1.6 KB). Compiled here as a static function that is called once
 * with a constant instance, the compiler keeps only the kernel this n_fft needs (about 1.4 KB
 * less flash, the same code). ARM_DSP_ATTRIBUTE is CMSIS-DSP's own hook for this. */
#undef ARM_DSP_ATTRIBUTE
#define ARM_DSP_ATTRIBUTE static
#define arm_cfft_f32 kws_cfft_f32
#include "arm_cfft_f32.c"
#undef arm_cfft_f32

static const arm_cfft_instance_f32 kws_cfft = {KWS_CFFT_LENGTH, KWS_CFFT_TWIDDLE, KWS_CFFT_BITREV, KWS_CFFT_BITREV_LENGTH};
#endif

#define HALF (KWS_N_FFT / 2)
#define QUART (KWS_N_FFT / 4)
#define GATES (4 * KWS_HIDDEN)
#define INV_2_30 9.31322574615478515625e-10f /* 2^-30: int16 power to [-1, 1] power, exact */
#define DB_PER_LN 4.34294481903251828f       /* 10 / ln(10) */
#define AMIN 1e-10f                          /* torchaudio AmplitudeToDB's floor of the power */
#define CMVN_EPS 1e-5f

/* The per-frame stages stay separate functions, whatever the compiler would inline: the stack
 * is then the entry's frame plus its deepest stage (the FFT's), not a sum that depends on the
 * compiler's inlining, and search.deploy.predict can model it. */
#if defined(__GNUC__)
#define KWS_NOINLINE __attribute__((noinline))
#else
#define KWS_NOINLINE
#endif

typedef union {
    float f;
    uint32_t u;
} bits_t;

/* The trimmed clip: len samples from x, zero-padded to padded >= KWS_N_FFT samples. */
typedef struct {
    const int16_t *x;
    uint32_t len;
    uint32_t padded;
} clip_t;

/* exp and log by hand, not newlib's expf/logf: those set errno, which links newlib's
 * reentrancy structure (1,072 bytes of .data) into the image, half the RAM budget, and
 * about 1.2 KB of flash for the two. Both are accurate to a few float32 ulps (tested). */
static float kws_expf(float x)
{
    bits_t s;
    float kf, r, p;
    int32_t k;
    if (x > 88.0f) x = 88.0f; /* keeps 2^k a normal float */
    if (x < -87.0f) x = -87.0f;
    kf = x * 1.44269504f;
    k = (int32_t)(kf + (kf >= 0.0f ? 0.5f : -0.5f));
    r = (x - (float)k * 6.9314575195e-01f) - (float)k * 1.4286067653e-06f; /* Cody-Waite, |r| <= ln2/2 */
    p = 1.0f + r * (1.0f + r * (0.5f + r * (1.66666667e-1f + r * (4.16666667e-2f +
        r * (8.33333333e-3f + r * (1.38888889e-3f + r * 1.98412698e-4f))))));
    s.u = (uint32_t)(k + 127) << 23;
    return p * s.f;
}

static float kws_logf(float x) /* x: a positive normal float */
{
    bits_t v;
    int32_t e;
    float m, s, s2;
    v.f = x;
    e = (int32_t)(v.u >> 23) - 127;
    v.u = (v.u & 0x007fffffu) | 0x3f800000u; /* mantissa in [1, 2) */
    if (v.f > 1.41421356f) {
        v.f *= 0.5f;
        e++;
    }
    m = v.f;
    s = (m - 1.0f) / (m + 1.0f); /* ln m = 2 atanh(s), |s| <= 0.172 */
    s2 = s * s;
    return (float)e * 6.9314575195e-01f +
           ((float)e * 1.4286067653e-06f + 2.0f * s * (1.0f + s2 * (0.333333333f + s2 * (0.2f + s2 * (0.142857143f + s2 * 0.111111111f)))));
}

static float sigmoid(float z) { return 1.0f / (1.0f + kws_expf(-z)); }
static float tanh_f(float z) { return 2.0f / (1.0f + kws_expf(-2.0f * z)) - 1.0f; } /* tanhf would pull expm1f */

static float db(float power) /* 10 log10(max(power, 1e-10)) of an int16-scaled power */
{
    power *= INV_2_30;
    return DB_PER_LN * kws_logf(power > AMIN ? power : AMIN);
}

/* ------------------------------------------------------------------ silence trimming */

#if KWS_TRIM
static float u64_to_float(uint64_t v) /* without libgcc's __aeabi_ul2f */
{
    return (float)(uint32_t)(v >> 32) * 4294967296.0f + (float)(uint32_t)v;
}

static float frame_energy(const int16_t *x) /* sum of squares of 256 samples, exact before the conversion */
{
    uint64_t acc = 0;
    uint32_t m;
    for (m = 0; m < 256; m++) acc += (uint32_t)((int32_t)x[m] * x[m]);
    return u64_to_float(acc);
}

/* Keep the samples from the first to the last frame (256 samples, hop 64) whose RMS is
 * within trim_db of the loudest: energy > peak * 10^(-trim_db/10). */
static void trim(const int16_t *x, uint32_t n, uint32_t *start, uint32_t *len)
{
    uint32_t frames, k, first = 0, last = 0;
    int found = 0;
    float peak = 0.0f, e;
    if (n <= 256) return;
    frames = 1 + (n - 256) / 64;
    for (k = 0; k < frames; k++) {
        e = frame_energy(x + 64 * k);
        if (e > peak) peak = e;
    }
    if (peak <= 0.0f) return;
    for (k = 0; k < frames; k++) {
        if (frame_energy(x + 64 * k) > peak * KWS_TRIM_RATIO) {
            if (!found) first = k;
            found = 1;
            last = k;
        }
    }
    *start = 64 * first;
    *len = (64 * last + 256 < n ? 64 * last + 256 : n) - *start;
}
#endif

/* ------------------------------------------------------------------ one frame */

/* Sample j of the clip padded by HALF on each side by reflection (numpy "reflect"). */
static float sample(const clip_t *s, int32_t j)
{
    int32_t i = j - HALF;
    if (i < 0) i = -i;
    else if (i >= (int32_t)s->padded) i = 2 * ((int32_t)s->padded - 1) - i;
    return (uint32_t)i < s->len ? (float)s->x[i] : 0.0f;
}

#if KWS_WIN_LENGTH == KWS_N_FFT
static float window(uint32_t m) /* periodic Hann, 0.5 - 0.5 cos(2 pi m / N), from the quarter-wave table */
{
    float c;
    if (m <= QUART) c = kws_t_cos[m];
    else if (m <= HALF) c = -kws_t_cos[HALF - m];
    else if (m <= 3 * QUART) c = -kws_t_cos[m - HALF];
    else c = kws_t_cos[KWS_N_FFT - m];
    return 0.5f - 0.5f * c;
}
#else
static float window(uint32_t m) /* periodic Hann of KWS_WIN_LENGTH, centred, from its half table */
{
    if (m < KWS_WIN_LEFT || m >= KWS_WIN_LEFT + KWS_WIN_LENGTH) return 0.0f;
    m -= KWS_WIN_LEFT;
    return kws_t_window[m <= KWS_WIN_LENGTH - m ? m : KWS_WIN_LENGTH - m];
}
#endif

#if KWS_DFT
/* The direct DFT (KWS_DFT): written here because CMSIS-DSP has none, and for a small n_fft its FFT
 * kernel and tables are most of a tiny model's flash (2 KB of 4.3 KB at n_fft 128). This needs no
 * table of its own and less code than the FFT's real split alone, at N / (2 log2(N/2)) times the
 * FFT's multiplies (11 at n_fft 128; measured: 5.3 times the instructions per clip).
 * First fold the windowed frame x into its even and odd parts: x[m] + x[N-m] (kept in x[m]) and
 * x[m] - x[N-m] (in x[N-m]), m = 1 .. N/2-1; a bin's real part needs only the first, its
 * imaginary part only the second. */
static void dft_fold(float x[KWS_N_FFT])
{
    uint32_t m;
    for (m = 1; m < HALF; m++) {
        float a = x[m], b = x[KWS_N_FFT - m];
        x[m] = a + b;
        x[KWS_N_FFT - m] = a - b;
    }
}

/* |X[f]|^2 = |sum_m x[m] exp(-2 pi j f m / N)|^2 of the folded frame; the twiddle of k = f m mod N
 * from the quarter-wave table: cos and sin of (pi/2) q + phi, quadrant q = k / (N/4). */
static float dft_power(const float x[KWS_N_FFT], uint32_t f)
{
    float re = x[0] + ((f & 1u) ? -x[HALF] : x[HALF]), im = 0.0f, a, b, c, sn;
    uint32_t m, k = 0, r;
    for (m = 1; m < HALF; m++) {
        k = (k + f) & (KWS_N_FFT - 1);
        r = k & (QUART - 1);
        a = kws_t_cos[r];         /* cos phi */
        b = kws_t_cos[QUART - r]; /* sin phi */
        switch (k / QUART) {
        case 0: c = a; sn = b; break;
        case 1: c = -b; sn = a; break;
        case 2: c = -a; sn = -b; break;
        default: c = b; sn = -a; break;
        }
        re += x[m] * c;
        im += x[KWS_N_FFT - m] * sn;
    }
    return re * re + im * im;
}
#endif

/* Mel energies of frame t (in int16 units squared). */
KWS_NOINLINE static void mel_energies(const clip_t *s, uint32_t t, float mel[KWS_N_MELS])
{
    float buf[KWS_N_FFT]; /* the windowed frame; with the FFT, then N/2 complex points, then the power spectrum */
    uint32_t m, f, b, j = 0;
    int32_t j0 = (int32_t)(t * KWS_HOP);
    for (m = 0; m < KWS_N_FFT; m++) buf[m] = sample(s, j0 + (int32_t)m) * window(m);
#if KWS_DFT
    dft_fold(buf);
#else
    kws_cfft_f32(&kws_cfft, buf, 0, 1);
    {
        /* Real FFT from the half-length complex one: bins 0 and N/2 from Z[0]. The power of
         * bin f goes to buf[2f]; bin N/2 to buf[1], a slot no longer needed. */
        float re = buf[0], im = buf[1];
        buf[0] = (re + im) * (re + im);
        buf[1] = (re - im) * (re - im);
    }
    for (uint32_t k = 1; k <= QUART; k++) {
        /* X[k] = E + W^k O and X[N/2-k] = conj(E - W^k O), with E = (Z[k] + conj Z[N/2-k]) / 2,
         * O = (Z[k] - conj Z[N/2-k]) / 2j, W^k = cos(2 pi k/N) - j sin(2 pi k/N). */
        float ar = buf[2 * k], ai = buf[2 * k + 1], br = buf[2 * (HALF - k)], bi = buf[2 * (HALF - k) + 1];
        float er = 0.5f * (ar + br), ei = 0.5f * (ai - bi), or_ = 0.5f * (ai + bi), oi = 0.5f * (br - ar);
        float c = kws_t_cos[k], sn = kws_t_cos[QUART - k];
        float wr = c * or_ + sn * oi, wi = c * oi - sn * or_;
        float xr = er + wr, xi = ei + wi, yr = er - wr, yi = ei - wi;
        buf[2 * k] = xr * xr + xi * xi;
        buf[2 * (HALF - k)] = yr * yr + yi * yi;
    }
#endif
    /* HTK triangles: between the points p[j] and p[j+1], a bin feeds the rising edge of filter j
     * with w = (f - p[j]) / (p[j+1] - p[j]) and the falling edge of filter j-1 with 1 - w. */
    for (b = 0; b < KWS_N_MELS; b++) mel[b] = 0.0f;
    for (f = 0; f <= HALF; f++) {
        float hz = (float)f * KWS_BIN_HZ, p, w;
        if (hz < kws_t_mel_pts[0]) continue;
        while (j <= KWS_N_MELS && hz >= kws_t_mel_pts[j + 1]) j++;
        if (j > KWS_N_MELS) break;
#if KWS_DFT
        p = dft_power(buf, f); /* only the bins some filter uses */
#else
        p = f == HALF ? buf[1] : buf[2 * f];
#endif
        w = (hz - kws_t_mel_pts[j]) / (kws_t_mel_pts[j + 1] - kws_t_mel_pts[j]);
        if (j < KWS_N_MELS) mel[j] += p * w;
        if (j > 0) mel[j - 1] += p * (1.0f - w);
    }
}

/* MFCCs of frame t: dB (clamped at floor_db when top_db is set), orthonormal DCT-II. */
KWS_NOINLINE static void mfcc(const clip_t *s, uint32_t t, float floor_db, float out[KWS_N_MFCC])
{
    float mel[KWS_N_MELS];
    uint32_t b, k, m;
    mel_energies(s, t, mel);
    for (b = 0; b < KWS_N_MELS; b++) {
        float d = db(mel[b]);
#if KWS_TOP_DB
        if (d < floor_db) d = floor_db;
#endif
        mel[b] = d;
    }
    (void)floor_db;
    for (k = 0; k < KWS_N_MFCC; k++) {
        /* cos(pi (2b+1) k / 2M) = cos(pi m / 2M), m = (2b+1)k mod 4M, from the quarter-wave table */
        float acc = 0.0f, c;
        m = k;
        for (b = 0; b < KWS_N_MELS; b++) {
            if (m <= KWS_N_MELS) c = kws_t_dct_cos[m];
            else if (m <= 2 * KWS_N_MELS) c = -kws_t_dct_cos[2 * KWS_N_MELS - m];
            else if (m <= 3 * KWS_N_MELS) c = -kws_t_dct_cos[m - 2 * KWS_N_MELS];
            else c = kws_t_dct_cos[4 * KWS_N_MELS - m];
            acc += mel[b] * c;
            m += 2 * k;
            if (m >= 4 * KWS_N_MELS) m -= 4 * KWS_N_MELS;
        }
        out[k] = acc * (k == 0 ? KWS_DCT_SCALE0 : KWS_DCT_SCALE);
    }
}

/* ------------------------------------------------------------------ network */

#if KWS_QUANT == KWS_QUANT_QAT && KWS_PO2
static float pow2(int32_t e) /* 2^e, e in -126..127 (checked by the generator) */
{
    bits_t v;
    v.u = (uint32_t)(e + 127) << 23;
    return v.f;
}
#endif

/* z[r] += sum_c W[r, c] v[c] over the kept weights of one stored matrix, decoded on the fly
 * in ascending flat position (docs/artifact.md section 3). */
static void matvec(const kws_matrix_t *w, const float *v, float *z)
{
    uint32_t k, p = 0, r;
    float x;
#if KWS_QUANT == KWS_QUANT_QAT
    const uint8_t *q = (const uint8_t *)w->values;
    uint32_t acc = 0, nbits = 0, u;
#endif
    for (k = 0; k < w->nnz; k++, p++) {
#if KWS_HAS_MASK
        if (w->mask)
            while (!((w->mask[p >> 3] >> (p & 7)) & 1u)) p++;
#endif
#if KWS_HAS_INDEX
        if (w->index_size == 1) p = ((const uint8_t *)w->index)[k];
        else if (w->index_size == 2) p = ((const uint16_t *)w->index)[k];
        else if (w->index_size == 4) p = ((const uint32_t *)w->index)[k];
#endif
        r = p / w->cols;
#if KWS_QUANT == KWS_QUANT_FP32
        x = ((const float *)w->values)[k];
#else
#if KWS_QUANT == KWS_QUANT_PTQ
        x = (float)((const int8_t *)w->values)[k];
#else
        while (nbits < KWS_BITS) { /* LSB-first bit stream of b-bit two's complement codes */
            acc |= (uint32_t)*q++ << nbits;
            nbits += 8;
        }
        u = acc & ((1u << KWS_BITS) - 1u);
        acc >>= KWS_BITS;
        nbits -= KWS_BITS;
        x = (float)((int32_t)u - (u >> (KWS_BITS - 1) ? (1 << KWS_BITS) : 0));
#endif
#if KWS_QUANT == KWS_QUANT_QAT && KWS_PO2
        x *= pow2(((const int8_t *)w->scale)[KWS_PER_CHANNEL ? r : 0]);
#else
        x *= ((const float *)w->scale)[KWS_PER_CHANNEL ? r : 0];
#endif
#endif
        z[r] += x * v[p - r * w->cols];
    }
}

KWS_NOINLINE static void lstm_step(const float x[KWS_N_MFCC], float h[KWS_HIDDEN], float c[KWS_HIDDEN])
{
    float z[GATES];
    uint32_t j;
    for (j = 0; j < GATES; j++) z[j] = kws_w_lstm_bias[j];
    matvec(&kws_m_ih, x, z);
    matvec(&kws_m_hh, h, z);
    for (j = 0; j < KWS_HIDDEN; j++) { /* gates i, f, g, o */
        float i = sigmoid(z[j]), f = sigmoid(z[KWS_HIDDEN + j]);
        float g = tanh_f(z[2 * KWS_HIDDEN + j]), o = sigmoid(z[3 * KWS_HIDDEN + j]);
        c[j] = f * c[j] + i * g;
        h[j] = o * tanh_f(c[j]);
    }
}

/* ------------------------------------------------------------------ the clip */

#if KWS_TOP_DB
KWS_NOINLINE static float clamp_floor(const clip_t *s, uint32_t frames) /* the clip's loudest dB - top_db */
{
    float mel[KWS_N_MELS], peak = 0.0f;
    uint32_t t, b;
    for (t = 0; t < frames; t++) {
        mel_energies(s, t, mel);
        for (b = 0; b < KWS_N_MELS; b++)
            if (mel[b] > peak) peak = mel[b];
    }
    return db(peak) - KWS_TOP_DB_VALUE;
}
#endif

int kws_classify(const int16_t *pcm, size_t n, float logits[KWS_N_CLASSES])
{
    clip_t s;
    uint32_t start = 0, len, frames, t, k;
    float h[KWS_HIDDEN], c[KWS_HIDDEN], x[KWS_N_MFCC], floor_db = 0.0f;
    int best;
#if KWS_CMVN
    float mean[KWS_N_MFCC], spread[KWS_N_MFCC]; /* per-coefficient mean; sum of squared deviations, then the divisor */
#endif
    if (pcm == NULL || logits == NULL || n == 0) return -1;
    len = (uint32_t)n;
#if KWS_TRIM
    trim(pcm, (uint32_t)n, &start, &len);
#endif
    s.x = pcm + start;
    s.len = len;
    s.padded = len < KWS_N_FFT ? KWS_N_FFT : len;
    frames = 1 + s.padded / KWS_HOP; /* centred frames: 1 + (L + 2 (N/2) - N) / hop */
#if KWS_TOP_DB
    floor_db = clamp_floor(&s, frames);
#endif
#if KWS_CMVN
    for (k = 0; k < KWS_N_MFCC; k++) mean[k] = spread[k] = 0.0f;
    for (t = 0; t < frames; t++) { /* Welford: one pass, no frame stored */
        mfcc(&s, t, floor_db, x);
        for (k = 0; k < KWS_N_MFCC; k++) {
            float d = x[k] - mean[k];
            mean[k] += d / (float)(t + 1);
            spread[k] += d * (x[k] - mean[k]);
        }
    }
    for (k = 0; k < KWS_N_MFCC; k++) {
#if KWS_CMVN == 2
        float sd = sqrtf(spread[k] / (float)frames);
        spread[k] = sd > CMVN_EPS ? sd : CMVN_EPS;
#else
        spread[k] = 1.0f;
#endif
    }
#endif
    for (k = 0; k < KWS_HIDDEN; k++) h[k] = c[k] = 0.0f;
    for (t = 0; t < frames; t++) {
        mfcc(&s, t, floor_db, x);
        for (k = 0; k < KWS_N_MFCC; k++) {
            float v = x[k];
#if KWS_CMVN
            v = (v - mean[k]) / spread[k];
#endif
            x[k] = (v - kws_w_norm_mean[k]) / kws_w_norm_std[k];
        }
        lstm_step(x, h, c);
    }
    for (k = 0; k < KWS_N_CLASSES; k++) logits[k] = kws_w_fc_bias[k];
    matvec(&kws_m_fc, h, logits);
    best = 0;
    for (k = 1; k < KWS_N_CLASSES; k++)
        if (logits[k] > logits[best]) best = (int)k;
    return best;
}
