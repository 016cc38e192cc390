/* Fuzz target for the int8 kernels (system_opts/csrc/har_int8.c): looks for undefined behaviour and
 * memory errors, not for wrong results (bit-exactness is tests/unit/test_buffer_pool_c.py's job).
 *
 * `LLVMFuzzerTestOneInput(data, size)` (libFuzzer's entry point) decodes the bytes into a random but
 * VALID program and runs it:
 * 1. A byte stream: the input's bytes, then (once they run out) SplitMix64 seeded by an FNV-1a hash of
 *    the input, so any input, even an empty one, decodes to a whole program, deterministically.
 * 2. 1-4 ops, each a kind of har_int8.c: quantize_input, gemm (conv1d or its Linear form, in every
 *    loop order the op table can select), dwconv (depthwise conv), maxpool (plain or phase-major, also
 *    in place), global average pool, dequantize. An op reads the previous op's output when the types
 *    fit (a conv's phase-major output can go to the in-place pool after it, as in the firmware's
 *    layout), else fresh data.
 * 3. Every buffer is malloc'ed with EXACTLY the bytes the op reads or writes (a conv's input includes
 *    its halo rows, which the kernel itself writes), so AddressSanitizer flags an overrun of one byte;
 *    a chained input is a copy of the previous output, never the same buffer.
 * 4. Values lean on the edges: extremes of every integer range, NaN (quiet, signalling, negative),
 *    +-Inf, +-FLT_MAX, the smallest normal, denormals, -0.0, exact halves, any bit pattern.
 * 5. har_op_run runs each op; then cheap invariants (the gemm output lies in [act_min, act_max], its
 *    halo rows hold zp_in, the same for dwconv; an unknown kind or gemm mode, or one left out of the build by
 *    har_int8_config.h, is refused with -1) and, for some inputs, har_run over the whole table a second
 *    time (buffers are reused between inferences on the device too).
 * A broken invariant prints "har-fuzz: invariant broken: ..." and calls abort(): a finding like any other.
 *
 * THE KERNELS' CONTRACT (the parameter ranges the exporter guarantees and checks; the fuzzer draws
 * only inside them, so anything a sanitizer reports is a kernel bug, not a fuzzer artefact):
 * - every count (rows, channels, length, n) >= 1; buffers distinct unless documented in place
 *   (maxpool phase-major: y may be x's first block); int32 / int16 / float buffers naturally aligned;
 * - gemm: mode (i[11]) one of HAR_GEMM_DOT (no scratch), HAR_GEMM_TIME_MAJOR (p[6] int16 xt of
 *   c_in x (n_in + 2 pad), p[7] int32 acc of rows_out), HAR_GEMM_IM2COL16 (p[6] int16 xs of
 *   (n_in + 2 pad) * c_in + 4; weights ceil(c_out / 2) * 2 * tp bytes, tp = k * c_in rounded up to a
 *   multiple of 4: channel pairs interleaved by quads stored w0, w2, w1, w3, zero beyond k * c_in and
 *   in the row after an odd last channel), HAR_GEMM_CSR (p[2] the nonzero values, p[6] uint16 row_ptr of
 *   c_out + 1 non-decreasing offsets from 0, p[7] uint16 column of each value, < k * c_in),
 *   HAR_GEMM_PALETTE4 (p[2] ceil(c_out * k * c_in / 2) bytes of 4-bit indices < the codebook size,
 *   p[6] that codebook, 1..16 int8);
 *   k >= 1, pad >= 0, 1 <= phases, rows_out a multiple of phases and rows_out <= n_in + 2 pad - k + 1;
 *   k * c_in <= 65,793 (255 * 128 * k * c_in must fit int32; intref refuses > 66,000 with |w| <= 127);
 *   Linear form: n_in 1, k 1, pad 0, rows_out 1, phases 1;
 * - dwconv: as a conv's form of gemm with c_in == c_out == c and weights c x k (one row per channel),
 *   no mode and no scratch;
 * - maxpool: 1 <= kernel, rows_out = floor(n / kernel) >= 1 (only rows_out * kernel rows are read);
 *   phase-major input: the conv wrote it with phases == kernel;
 * - global pool: length * 255 fits int32;
 * - zero points in [-128, 127]; -128 <= act_min <= act_max <= 127;
 * - multipliers in [0, 2^31 - 1], shifts in [-31, 30] (quantize_multiplier gives m in [2^30, 2^31)
 *   or 0, the kernels must also take the rest of the range);
 * - ANY int32 bias (the accumulator wraps like the reference), ANY int8 weight (-128 included), ANY
 *   float input, inverse scale, offset or output scale (NaN, Inf, denormals).
 * Draw limits of this fuzzer (narrower than the contract, so one execution stays well under 1 ms on
 * average): rows <= 256, channels <= 64 (sizes drawn log-uniformly: mostly small, sometimes the
 * maximum), kernel 1..9, padding 0..4, phases 1..3.
 *
 * Build (firmware/hygiene.py): this file and har_int8.c (its own translation unit, as on a device) with
 * host gcc and -fsanitize=address,undefined,float-cast-overflow; with -DHAR_FUZZ_STANDALONE a main()
 * replaces libFuzzer (gcc has no -fsanitize=fuzzer):
 *     fuzz_har_int8 RUNS SEED [START]
 * runs inputs START..RUNS-1, input i made by SplitMix64 from (SEED, i), so `RUNS=i+1 START=i` replays
 * input i alone; it prints "har-fuzz: N runs" at the end, or "har-fuzz: died on input i" when a
 * sanitizer (with abort_on_error=1) or an invariant stops it.
 * With clang: clang -fsanitize=fuzzer,address,undefined -I system_opts/csrc this file and har_int8.c.
 */
#include <float.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "har_int8.h" /* the kernels' own op record and enums: the fuzzer cannot drift from the table */
/* which kinds and gemm modes the kernels were built with (an export enables only what it uses); an
 * unset one is off, as in har_int8.c's #if */
#include "har_int8_config.h"
#ifndef HAR_WITH_QUANTIZE
#define HAR_WITH_QUANTIZE 0
#endif
#ifndef HAR_WITH_DEQUANTIZE
#define HAR_WITH_DEQUANTIZE 0
#endif
#ifndef HAR_WITH_GEMM_DOT
#define HAR_WITH_GEMM_DOT 0
#endif
#ifndef HAR_WITH_GEMM_TIME_MAJOR
#define HAR_WITH_GEMM_TIME_MAJOR 0
#endif
#ifndef HAR_WITH_GEMM_IM2COL16
#define HAR_WITH_GEMM_IM2COL16 0
#endif
#ifndef HAR_WITH_MAXPOOL_STRIDED
#define HAR_WITH_MAXPOOL_STRIDED 0
#endif
#ifndef HAR_WITH_GEMM_CSR
#define HAR_WITH_GEMM_CSR 0
#endif
#ifndef HAR_WITH_GEMM_PALETTE4
#define HAR_WITH_GEMM_PALETTE4 0
#endif
#ifndef HAR_WITH_DWCONV
#define HAR_WITH_DWCONV 0
#endif

enum { MAX_OPS = 4, MAX_ROWS = 256, MAX_CH = 64, MAX_K = 9, MAX_PAD = 4, MAX_PHASES = 3, MAX_ALLOCS = 64 };

/* a broken invariant (or a fuzzer bug): named on stderr, then a finding like any other */
static void fail(const char *why) {
    fprintf(stderr, "har-fuzz: invariant broken: %s\n", why);
    abort();
}

/* --- the byte stream (step 1) ------------------------------------------------------------------- */

struct bytes {
    const uint8_t *data;
    size_t size, pos;
    uint64_t state; /* SplitMix64 once the input is used up */
};

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint32_t take8(struct bytes *b) {
    if (b->pos < b->size) return b->data[b->pos++];
    return (uint32_t)(splitmix64(&b->state) >> 56);
}

static uint32_t take32(struct bytes *b) {
    uint32_t v = 0;
    for (int j = 0; j < 4; j++) v = (v << 8) | take8(b);
    return v;
}

/* in [lo, hi]; int64 so that the whole int32 range is one span */
static int64_t between(struct bytes *b, int64_t lo, int64_t hi) {
    const uint64_t span = (uint64_t)(hi - lo) + 1u;
    return lo + (int64_t)((uint64_t)take32(b) % span);
}

/* in [lo, hi], an edge of the range (or 0) three times in eight: where overflows live */
static int32_t edgy(struct bytes *b, int32_t lo, int32_t hi) {
    switch (take8(b) % 8) {
    case 0: return lo;
    case 1: return hi;
    case 2: return lo < hi ? lo + 1 : lo;
    case 3: return hi > lo ? hi - 1 : hi;
    case 4: return lo <= 0 && 0 <= hi ? 0 : lo;
    default: return (int32_t)between(b, lo, hi);
    }
}

/* a size in [1, max], log-uniform (mostly small, so an execution is quick), sometimes exactly max */
static int32_t dim(struct bytes *b, int32_t max) {
    const uint32_t e = take8(b) % 10;
    if (e == 9) return max;
    const int32_t cap = (int32_t)1 << e < max ? (int32_t)1 << e : max;
    return (int32_t)between(b, 1, cap);
}

static float float_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static float any_float(struct bytes *b) {
    switch (take8(b) % 16) {
    case 0: return float_bits(0x7FC00000u); /* quiet NaN */
    case 1: return float_bits(0xFFC00001u); /* negative quiet NaN with a payload */
    case 2: return float_bits(0x7F800001u); /* signalling NaN */
    case 3: return INFINITY;
    case 4: return -INFINITY;
    case 5: return FLT_MAX;
    case 6: return -FLT_MAX;
    case 7: return FLT_MIN;
    case 8: return float_bits(take32(b) & 0x807FFFFFu); /* a denormal (or +-0) of either sign */
    case 9: return -0.0f;
    case 10: return 0.0f;
    case 11: return float_bits(take32(b)); /* any bit pattern */
    case 12: return (float)between(b, -300, 300) + 0.5f; /* a tie for round-half-to-even */
    case 13: return (float)between(b, -(1LL << 31), (1LL << 31) - 1); /* beyond int32 after scaling */
    default: return (float)between(b, -100000, 100000) / 256.0f; /* an ordinary value */
    }
}

static void fill_int8(struct bytes *b, int8_t *x, size_t n) {
    const uint32_t mode = take8(b) % 8;
    for (size_t j = 0; j < n; j++) {
        switch (mode) {
        case 0: x[j] = -128; break; /* extremes drive the accumulators to their bounds */
        case 1: x[j] = 127; break;
        case 2: x[j] = (int8_t)(j % 2 ? 127 : -128); break;
        default: x[j] = (int8_t)(uint8_t)take8(b); break;
        }
    }
}

static void fill_int32(struct bytes *b, int32_t *x, size_t n, int32_t lo, int32_t hi) {
    for (size_t j = 0; j < n; j++) x[j] = edgy(b, lo, hi);
}

static void fill_float(struct bytes *b, float *x, size_t n) {
    for (size_t j = 0; j < n; j++) x[j] = any_float(b);
}

/* --- exact-size buffers (step 3) ------------------------------------------------------------------ */

struct pool {
    void *p[MAX_ALLOCS];
    int n;
};

static void *grab(struct pool *pl, size_t bytes) {
    if (pl->n == MAX_ALLOCS || bytes == 0) fail("fuzzer bug: too many or empty buffers");
    void *p = malloc(bytes);
    if (!p) fail("out of memory");
    pl->p[pl->n++] = p;
    return p;
}

static void release(struct pool *pl) {
    while (pl->n) free(pl->p[--pl->n]);
}

/* the tensor an op leaves for the next one */
struct tensor {
    const void *data; /* NULL: nothing to chain from */
    int is_float;
    int32_t rows, cols, phases; /* phases > 1: a conv output stored phase-major */
};

/* chain when the types fit, three times in four (the fourth brings fresh shapes and data) */
static int chains(struct bytes *b, const struct tensor *in, int want_float) {
    return in->data && in->is_float == want_float && take8(b) % 4 != 0;
}

static void int8_input(struct bytes *b, const struct tensor *in, int chained, int8_t *x, size_t n) {
    if (chained)
        memcpy(x, in->data, n);
    else
        fill_int8(b, x, n);
}

/* --- one op per kind (step 2) --------------------------------------------------------------------- */

static void make_quantize(struct bytes *b, struct pool *pl, const struct tensor *in, struct har_op *op,
                          struct tensor *out) {
    const int chained = chains(b, in, 1);
    const int32_t rows = chained ? in->rows : dim(b, MAX_ROWS), c = chained ? in->cols : dim(b, MAX_CH);
    const size_t n = (size_t)rows * (size_t)c;
    float *x = grab(pl, n * sizeof(float)), *inv = grab(pl, (size_t)c * sizeof(float)),
          *off = grab(pl, (size_t)c * sizeof(float));
    if (chained)
        memcpy(x, in->data, n * sizeof(float));
    else
        fill_float(b, x, n);
    fill_float(b, inv, (size_t)c);
    fill_float(b, off, (size_t)c);
    op->kind = HAR_QUANTIZE;
    op->i[0] = rows;
    op->i[1] = c;
    op->i[2] = edgy(b, -128, 127); /* the zero point NaN becomes */
    op->p[0] = x;
    op->p[1] = grab(pl, n);
    op->p[2] = inv;
    op->p[3] = off;
    *out = (struct tensor){op->p[1], 0, rows, c, 1};
}

/* a conv's shapes (k, pad, phases; rows_out a multiple of phases) over n_in rows: the gemm's rules */
static void conv_rows(struct bytes *b, int32_t n_in, int32_t *k, int32_t *pad, int32_t *rows, int32_t *phases) {
    *k = 1 + (int32_t)(take8(b) % MAX_K);
    *pad = (int32_t)(take8(b) % (MAX_PAD + 1));
    if (*k > n_in + 2 * *pad) *k = n_in + 2 * *pad; /* at least one output row */
    if (n_in + 2 * *pad - *k + 1 > MAX_ROWS) *pad = (MAX_ROWS + *k - 1 - n_in) / 2; /* at most MAX_ROWS */
    const int32_t conv_rows = n_in + 2 * *pad - *k + 1;
    *phases = 1 + (int32_t)(take8(b) % MAX_PHASES);
    if (*phases > conv_rows) *phases = conv_rows;
    *rows = conv_rows / *phases * *phases; /* floor mode: the pool after it drops the remainder */
}

/* every gemm loop order of har_int8.h (i[11]); each needs its own scratch (p[6], p[7]) */
static const int32_t GEMM_MODES[] = {HAR_GEMM_DOT, HAR_GEMM_TIME_MAJOR, HAR_GEMM_IM2COL16, HAR_GEMM_CSR,
                                     HAR_GEMM_PALETTE4};
enum { N_GEMM_MODES = sizeof GEMM_MODES / sizeof GEMM_MODES[0] };

/* zero points and a clamp range lo <= hi, edge values favoured: q = {zp_in, zp_out, lo, hi} */
static void draw_quant(struct bytes *b, int32_t q[4]) {
    for (int j = 0; j < 4; j++) q[j] = edgy(b, -128, 127);
    if (q[2] > q[3]) {
        const int32_t t = q[2];
        q[2] = q[3], q[3] = t;
    }
}

/* the padded int8 input of a conv: halo garbage (the kernel must overwrite it), then the n_in data rows */
static int8_t *padded_input(struct bytes *b, struct pool *pl, const struct tensor *in, int chained, int32_t n_in,
                            int32_t pad, int32_t c) {
    const size_t n_pad = (size_t)(n_in + 2 * pad);
    int8_t *x = grab(pl, n_pad * (size_t)c);
    fill_int8(b, x, n_pad * (size_t)c);
    int8_input(b, in, chained, x + pad * c, (size_t)n_in * (size_t)c);
    return x;
}

/* per-channel bias (any int32), multiplier (>= 0) and shift ([-31, 30]) in p[3], p[4], p[5] */
static void requant_arrays(struct bytes *b, struct pool *pl, int32_t c, struct har_op *op) {
    int32_t *bias = grab(pl, (size_t)c * sizeof(int32_t)), *m = grab(pl, (size_t)c * sizeof(int32_t));
    int8_t *shift = grab(pl, (size_t)c);
    fill_int32(b, bias, (size_t)c, INT32_MIN, INT32_MAX);
    fill_int32(b, m, (size_t)c, 0, INT32_MAX);
    for (int32_t ch = 0; ch < c; ch++) shift[ch] = (int8_t)edgy(b, -31, 30);
    op->p[3] = bias;
    op->p[4] = m;
    op->p[5] = shift;
}

static void make_gemm(struct bytes *b, struct pool *pl, const struct tensor *in, struct har_op *op,
                      struct tensor *out) {
    const int linear = take8(b) % 4 == 0;
    int chained = chains(b, in, 0);
    int32_t n_in, c_in, k, pad, rows, phases;
    if (linear) {
        if (chained && in->rows * in->cols > MAX_CH) chained = 0; /* a Linear layer follows the pool */
        c_in = chained ? in->rows * in->cols : dim(b, MAX_CH);
        n_in = 1, k = 1, pad = 0, rows = 1, phases = 1;
    } else {
        n_in = chained ? in->rows : dim(b, MAX_ROWS);
        c_in = chained ? in->cols : dim(b, MAX_CH);
        conv_rows(b, n_in, &k, &pad, &rows, &phases);
    }
    const int32_t c_out = dim(b, MAX_CH), n_pad = n_in + 2 * pad, terms = k * c_in;
    const int32_t mode = GEMM_MODES[take8(b) % N_GEMM_MODES];
    /* im2col16: rows padded to tp terms, channel pairs interleaved by quads, odd c_out padded by a zero row */
    const int32_t tp = (terms + 3) & ~3, pairs = (c_out + 1) / 2;
    const size_t w_bytes =
        mode == HAR_GEMM_IM2COL16 ? (size_t)pairs * 2 * (size_t)tp : (size_t)c_out * (size_t)terms;
    int32_t q[4];
    draw_quant(b, q);
    int8_t *x = padded_input(b, pl, in, chained, n_in, pad, c_in);
    int8_t *w = grab(pl, w_bytes);
    fill_int8(b, w, w_bytes);
    if (mode == HAR_GEMM_IM2COL16) {
        /* byte b of half h of quad q of pair p is term 4 q + {0, 2, 1, 3}[b] of channel 2 p + h: zero where
         * that term or channel does not exist (the exporter's padding) */
        static const int32_t term_of_byte[4] = {0, 2, 1, 3};
        const size_t pair_bytes = 2 * (size_t)tp;
        for (size_t j = 0; j < w_bytes; j++) {
            const int32_t pos = (int32_t)(j % pair_bytes), ch = 2 * (int32_t)(j / pair_bytes) + pos / 4 % 2;
            if (ch >= c_out || pos / 8 * 4 + term_of_byte[pos % 4] >= terms) w[j] = 0;
        }
    }
    requant_arrays(b, pl, c_out, op);
    const int32_t ints[12] = {n_in, c_in, k, pad, rows, c_out, phases, q[0], q[1], q[2], q[3], mode};
    op->kind = HAR_GEMM;
    memcpy(op->i, ints, sizeof ints);
    op->p[0] = x;
    op->p[1] = grab(pl, (size_t)rows * (size_t)c_out);
    op->p[2] = w;
    if (mode == HAR_GEMM_TIME_MAJOR) {
        op->p[6] = grab(pl, (size_t)c_in * (size_t)n_pad * sizeof(int16_t)); /* xt */
        op->p[7] = grab(pl, (size_t)rows * sizeof(int32_t)); /* acc */
    } else if (mode == HAR_GEMM_IM2COL16) {
        op->p[6] = grab(pl, ((size_t)n_pad * (size_t)c_in + 4) * sizeof(int16_t)); /* xs: padded input + 4 */
    } else if (mode == HAR_GEMM_CSR) {
        /* each output channel keeps a random subset of its terms (possibly none), columns ascending; the
         * values are the first nnz bytes of w (exactly nnz of them: ASan sees any read beyond) */
        uint16_t *row_ptr = grab(pl, ((size_t)c_out + 1) * sizeof(uint16_t));
        const uint32_t density = take8(b) % 5; /* 0: none kept ... 4: every term kept */
        const size_t at = b->pos; /* draw the kept terms twice from the same bytes: count, then fill */
        const uint64_t state = b->state;
        int32_t nnz = 0;
        for (int32_t j = 0; j < c_out * terms; j++) nnz += take8(b) % 4 < density;
        b->pos = at, b->state = state;
        /* exactly nnz entries (one when none: a zero-size grab), so ASan sees any read past them */
        uint16_t *col = grab(pl, (size_t)(nnz ? nnz : 1) * sizeof(uint16_t));
        int8_t *val = grab(pl, (size_t)(nnz ? nnz : 1));
        int32_t n = 0;
        row_ptr[0] = 0;
        for (int32_t c = 0; c < c_out; c++) {
            for (int32_t j = 0; j < terms; j++)
                if (take8(b) % 4 < density) col[n++] = (uint16_t)j;
            row_ptr[c + 1] = (uint16_t)n;
        }
        fill_int8(b, val, (size_t)nnz);
        op->p[2] = val;
        op->p[6] = row_ptr;
        op->p[7] = col;
    } else if (mode == HAR_GEMM_PALETTE4) {
        /* exactly the index bytes and codebook entries the layer has: ASan sees any read beyond */
        const int32_t k_cb = 1 + (int32_t)(take8(b) % 16);
        const size_t n_idx = ((size_t)c_out * (size_t)terms + 1) / 2;
        uint8_t *idx = grab(pl, n_idx);
        for (size_t j = 0; j < n_idx; j++) {
            const uint32_t lo = take8(b) % (uint32_t)k_cb; /* two statements: a fixed order of draws */
            idx[j] = (uint8_t)(lo | (take8(b) % (uint32_t)k_cb) << 4);
        }
        int8_t *cb = grab(pl, (size_t)k_cb);
        fill_int8(b, cb, (size_t)k_cb);
        op->p[2] = idx;
        op->p[6] = cb;
    }
    *out = (struct tensor){op->p[1], 0, rows, c_out, phases};
}

/* depthwise conv: p = x (halo rows included), y, w (c x k), bias, m, shift; i as har_int8.c dwconv */
static void make_dwconv(struct bytes *b, struct pool *pl, const struct tensor *in, struct har_op *op,
                        struct tensor *out) {
    const int chained = chains(b, in, 0);
    const int32_t n_in = chained ? in->rows : dim(b, MAX_ROWS), c = chained ? in->cols : dim(b, MAX_CH);
    int32_t k, pad, rows, phases;
    conv_rows(b, n_in, &k, &pad, &rows, &phases);
    int32_t q[4];
    draw_quant(b, q);
    int8_t *x = padded_input(b, pl, in, chained, n_in, pad, c);
    int8_t *w = grab(pl, (size_t)c * (size_t)k);
    fill_int8(b, w, (size_t)c * (size_t)k);
    requant_arrays(b, pl, c, op);
    const int32_t ints[10] = {n_in, c, k, pad, rows, phases, q[0], q[1], q[2], q[3]};
    op->kind = HAR_DWCONV;
    memcpy(op->i, ints, sizeof ints);
    op->p[0] = x;
    op->p[1] = grab(pl, (size_t)rows * (size_t)c);
    op->p[2] = w;
    *out = (struct tensor){op->p[1], 0, rows, c, phases};
}

static void make_maxpool(struct bytes *b, struct pool *pl, const struct tensor *in, struct har_op *op,
                         struct tensor *out) {
    const int chained = chains(b, in, 0);
    const int32_t n = chained ? in->rows : dim(b, MAX_ROWS), c = chained ? in->cols : dim(b, MAX_CH);
    int32_t k, phase_major;
    if (chained && in->phases > 1 && take8(b) % 4 != 0) {
        k = in->phases, phase_major = 1; /* the firmware's conv -> pool pair */
    } else {
        k = 1 + (int32_t)(take8(b) % MAX_K);
        if (k > n) k = n;
        phase_major = (int32_t)(take8(b) % 2);
    }
    const int32_t rows = n / k;
    const size_t n_read = (size_t)rows * (size_t)k * (size_t)c;
    int8_t *x = grab(pl, n_read);
    int8_input(b, in, chained, x, n_read);
    op->kind = HAR_MAXPOOL;
    op->i[0] = rows;
    op->i[1] = c;
    op->i[2] = k;
    op->i[3] = phase_major;
    op->p[0] = x;
    op->p[1] = phase_major && take8(b) % 2 ? (void *)x : grab(pl, (size_t)rows * (size_t)c); /* in place */
    *out = (struct tensor){op->p[1], 0, rows, c, 1};
}

static void make_gap(struct bytes *b, struct pool *pl, const struct tensor *in, struct har_op *op,
                     struct tensor *out) {
    const int chained = chains(b, in, 0);
    const int32_t length = chained ? in->rows : dim(b, MAX_ROWS), c = chained ? in->cols : dim(b, MAX_CH);
    int8_t *x = grab(pl, (size_t)length * (size_t)c), *shift = grab(pl, 1);
    int32_t *m = grab(pl, sizeof(int32_t));
    int8_input(b, in, chained, x, (size_t)length * (size_t)c);
    m[0] = edgy(b, 0, INT32_MAX);
    shift[0] = (int8_t)edgy(b, -31, 30);
    op->kind = HAR_GAP;
    op->i[0] = length;
    op->i[1] = c;
    op->i[2] = edgy(b, -128, 127);
    op->i[3] = edgy(b, -128, 127);
    op->p[0] = x;
    op->p[1] = grab(pl, (size_t)c);
    op->p[2] = m;
    op->p[3] = shift;
    *out = (struct tensor){op->p[1], 0, 1, c, 1};
}

static void make_dequantize(struct bytes *b, struct pool *pl, const struct tensor *in, struct har_op *op,
                            struct tensor *out) {
    const int chained = chains(b, in, 0);
    const int32_t rows = chained ? in->rows : dim(b, MAX_ROWS), c = chained ? in->cols : dim(b, MAX_CH);
    const size_t n = (size_t)rows * (size_t)c;
    int8_t *x = grab(pl, n);
    int8_input(b, in, chained, x, n);
    op->kind = HAR_DEQUANTIZE;
    op->i[0] = (int32_t)n;
    op->i[1] = edgy(b, -128, 127);
    op->f[0] = any_float(b);
    op->p[0] = x;
    op->p[1] = grab(pl, n * sizeof(float));
    *out = (struct tensor){op->p[1], 1, rows, c, 1};
}

typedef void (*make_fn)(struct bytes *, struct pool *, const struct tensor *, struct har_op *, struct tensor *);
static const make_fn MAKERS[] = {make_quantize, make_gemm, make_maxpool, make_gap, make_dequantize, make_dwconv};
enum { N_KINDS = sizeof MAKERS / sizeof MAKERS[0] };

/* --- invariants (step 5) -------------------------------------------------------------------------- */

/* what har_op_run must return: 0, or -1 for a kind or mode this build left out (never a wrong result) */
static int expected_rc(const struct har_op *op) {
    switch (op->kind) {
    case HAR_QUANTIZE: return HAR_WITH_QUANTIZE ? 0 : -1;
    case HAR_GEMM:
        switch (op->i[11]) {
        case HAR_GEMM_DOT: return HAR_WITH_GEMM_DOT ? 0 : -1;
        case HAR_GEMM_TIME_MAJOR: return HAR_WITH_GEMM_TIME_MAJOR ? 0 : -1;
        case HAR_GEMM_IM2COL16: return HAR_WITH_GEMM_IM2COL16 ? 0 : -1;
        case HAR_GEMM_CSR: return HAR_WITH_GEMM_CSR ? 0 : -1;
        case HAR_GEMM_PALETTE4: return HAR_WITH_GEMM_PALETTE4 ? 0 : -1;
        default: return -1;
        }
    case HAR_MAXPOOL: return op->i[3] || HAR_WITH_MAXPOOL_STRIDED ? 0 : -1;
    case HAR_GAP: return 0;
    case HAR_DEQUANTIZE: return HAR_WITH_DEQUANTIZE ? 0 : -1;
    case HAR_DWCONV: return HAR_WITH_DWCONV ? 0 : -1;
    default: return -1;
    }
}

static void check_gemm(const struct har_op *op) {
    const int32_t c_in = op->i[1], pad = op->i[3], n_in = op->i[0], rows = op->i[4], c_out = op->i[5],
                  zp_in = op->i[7], lo = op->i[9], hi = op->i[10];
    const int8_t *x = op->p[0], *y = op->p[1];
    for (int32_t j = 0; j < pad * c_in; j++)
        if (x[j] != zp_in || x[(pad + n_in) * c_in + j] != zp_in) fail("gemm halo rows do not hold zp_in");
    for (int32_t j = 0; j < rows * c_out; j++)
        if (y[j] < lo || y[j] > hi) fail("gemm output outside [act_min, act_max]");
}

static void check_dwconv(const struct har_op *op) {
    const int32_t n_in = op->i[0], c = op->i[1], pad = op->i[3], rows = op->i[4], zp_in = op->i[6],
                  lo = op->i[8], hi = op->i[9];
    const int8_t *x = op->p[0], *y = op->p[1];
    for (int32_t j = 0; j < pad * c; j++)
        if (x[j] != zp_in || x[(pad + n_in) * c + j] != zp_in) fail("dwconv halo rows do not hold zp_in");
    for (int32_t j = 0; j < rows * c; j++)
        if (y[j] < lo || y[j] > hi) fail("dwconv output outside [act_min, act_max]");
}

static uint64_t fnv1a(const uint8_t *data, size_t size) {
    uint64_t h = 0xCBF29CE484222325ULL;
    for (size_t j = 0; j < size; j++) h = (h ^ data[j]) * 0x100000001B3ULL;
    return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct bytes b = {data, size, 0, fnv1a(data, size)};
    struct pool pl = {{0}, 0};
    const int32_t n_ops = 1 + (int32_t)(take8(&b) % MAX_OPS);
    struct har_op *table = grab(&pl, (size_t)n_ops * sizeof *table);
    memset(table, 0, (size_t)n_ops * sizeof *table); /* unused slots 0 / NULL, as the Python binding leaves them */
    struct tensor cur = {NULL, 0, 0, 0, 1};
    int32_t refused = -1, gemm = -1; /* first op left out of this build, first gemm */
    for (int32_t j = 0; j < n_ops; j++) {
        MAKERS[take8(&b) % N_KINDS](&b, &pl, &cur, &table[j], &cur);
        const int want = expected_rc(&table[j]), rc = har_op_run(&table[j]);
        if (rc != want)
            fail(want ? "a kernel left out of the build ran" : "har_op_run refused a valid op");
        if (rc != 0) {
            cur.data = NULL; /* its output was never written */
            refused = refused < 0 ? j : refused;
        } else if (table[j].kind == HAR_GEMM) {
            check_gemm(&table[j]);
        } else if (table[j].kind == HAR_DWCONV) {
            check_dwconv(&table[j]);
        }
        gemm = gemm < 0 && table[j].kind == HAR_GEMM ? j : gemm;
    }
    /* a second inference on the same buffers, as on a device: stops at the first refused op */
    const uint32_t again = take8(&b) % 8;
    if (again < 2 && (again ? har_run_repeat(table, n_ops, 1) : har_run(table, n_ops)) !=
                         (refused < 0 ? 0 : -1 - refused))
        fail("har_run returned the wrong code");
    struct har_op bad = table[0];
    bad.kind = take8(&b) % 2 ? 0x40000000 + (int32_t)take8(&b) : -1 - (int32_t)take8(&b); /* far from any kind */
    if (har_op_run(&bad) != -1 || har_run(&bad, 1) != -1) fail("an unknown kind was not refused with -1");
    if (gemm >= 0) { /* an unknown loop order too (the halo it writes first is the op's own) */
        bad = table[gemm];
        bad.i[11] = take8(&b) % 2 ? 5 + (int32_t)take8(&b) : -1 - (int32_t)take8(&b);
        if (har_op_run(&bad) != -1) fail("an unknown gemm mode was not refused with -1");
    }
    release(&pl);
    return 0;
}

/* --- standalone driver: libFuzzer's role when only gcc is at hand --------------------------------- */
#ifdef HAR_FUZZ_STANDALONE
#include "fuzz_main.h"
#endif
