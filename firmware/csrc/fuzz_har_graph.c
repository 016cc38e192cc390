/* Fuzz target for the graph kernels (system_opts/csrc/har_graph.c): looks for undefined behaviour and
 * memory errors (bit-exactness is tests/unit/test_graph_path.py's and test_graph_sanitizers.py's job).
 *
 * `LLVMFuzzerTestOneInput(data, size)` decodes the bytes into one random but VALID op and runs it:
 * 1. A byte stream: the input's bytes, then SplitMix64 seeded by an FNV-1a hash of the input, so every
 *    input (even an empty one) decodes to a whole op, deterministically.
 * 2. The op: conv (groups 1, depthwise, or grouped; any stride, padding and kernel that leave an output;
 *    dense or 4-bit palette weights), linear (dense or palette), max / average pool, mean, add, relu.
 * 3. The arena (input tensor(s), then the output, then a palette layer's scratch row) and the blob (biases,
 *    multipliers, shifts, palette, weights) are each ONE malloc of exactly the bytes they hold, back to back
 *    with no slack: a read or write past either end is an ASan report; inside, an overrun of the output
 *    into the scratch row or of a bias array into the next is not seen by ASan (the invariants and the
 *    bit-exactness tests cover those).
 * 4. Values lean on the edges: int8 extremes, zero points -128 / 127, biases at the contract's bound,
 *    multipliers 0 .. 2^31 - 1, shifts -31 .. 30 (add: -31 .. 0), clamp bounds anywhere act_min <= act_max.
 * 5. Invariant: every output lies in [act_min, act_max] (pools in [-128, 127]); har_g_op_run returns 0.
 * THE CONTRACT (har_graph.c's header; drawn inside it): |bias| + terms * 255 * 128 < 2^31, shifts in
 * [-31, 30] (add <= 0), multipliers >= 0, zero points and bounds in int8, act_min <= act_max, counts >= 1.
 * Draw limits: spatial sizes <= 12, channels <= 24, kernels <= 5, strides <= 3.
 * Build (firmware/hygiene.py, `--kernels graph`): this file and har_graph.c; -DHAR_FUZZ_STANDALONE gives
 * fuzz_main.h's driver: `fuzz_har_graph RUNS SEED [START]`.
 * With clang: clang -fsanitize=fuzzer,address,undefined -I system_opts/csrc this file and har_graph.c. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "har_graph.h"

struct stream {
    const uint8_t *data;
    size_t size, pos;
    uint64_t state;
};

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint32_t next(struct stream *st) {
    if (st->pos + 4 <= st->size) {
        uint32_t v;
        memcpy(&v, st->data + st->pos, 4);
        st->pos += 4;
        return v;
    }
    return (uint32_t)splitmix64(&st->state);
}

static int32_t range(struct stream *st, int32_t lo, int32_t hi) { /* inclusive */
    return lo + (int32_t)(next(st) % (uint32_t)(hi - lo + 1));
}

static int8_t edge8(struct stream *st) {
    const int32_t r = range(st, 0, 7);
    return r == 0 ? -128 : r == 1 ? 127 : r == 2 ? 0 : (int8_t)next(st);
}

static void fill8(struct stream *st, int8_t *p, int32_t n) {
    for (int32_t i = 0; i < n; i++) p[i] = edge8(st);
}

static uint8_t *exact(size_t n) {
    uint8_t *p = malloc(n ? n : 1);
    if (!p) abort();
    return p;
}

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "har-fuzz: invariant broken: %s\n", what);
        abort();
    }
}

static int32_t mult(struct stream *st) {
    const int32_t r = range(st, 0, 3);
    return r == 0 ? 0 : r == 1 ? 0x7FFFFFFF : r == 2 ? (1 << 30) : (int32_t)(next(st) & 0x7FFFFFFFu);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < size; i++) h = (h ^ data[i]) * 1099511628211ull;
    struct stream st = {data, size, 0, h};
    int32_t op[HAR_G_OP_WORDS];
    for (int32_t k = 0; k < HAR_G_OP_WORDS; k++) op[k] = 0;
    const int32_t kind = range(&st, HAR_G_CONV, HAR_G_RELU);
    op[0] = kind;
    int32_t in_n = 0, in2_n = 0, out_n = 0, w_n = 0, ch = 0, lo = -128, hi = 127, row = 0;
    if (kind == HAR_G_CONV || kind == HAR_G_MAXPOOL || kind == HAR_G_AVGPOOL) {
        const int32_t hh = range(&st, 1, 12), ww = range(&st, 1, 12);
        int32_t groups = 1, c = range(&st, 1, 24), co = c;
        const int32_t kh = range(&st, 1, 5), kw = range(&st, 1, 5), sh = range(&st, 1, 3), sw = range(&st, 1, 3);
        int32_t ph = 0, pw = 0;
        if (kind == HAR_G_CONV) {
            const int32_t g = range(&st, 0, 2); /* 0: groups 1, 1: depthwise (multiplier 1..3), 2: grouped */
            if (g == 1) { groups = c; co = c * range(&st, 1, 3); }
            else if (g == 2) { groups = range(&st, 1, 4); c = groups * range(&st, 1, 6); co = groups * range(&st, 1, 6); }
            else co = range(&st, 1, 24);
            ph = range(&st, 0, kh + 1); /* up to past the kernel: positions with no tap inside */
            pw = range(&st, 0, kw + 1);
        }
        const int32_t ho = (hh + 2 * ph - kh) / sh + 1, wo = (ww + 2 * pw - kw) / sw + 1;
        if (hh + 2 * ph < kh || ww + 2 * pw < kw) return 0; /* no output: the importer refuses it */
        int32_t v[] = {hh, ww, c, ho, wo, co, kh, kw, sh, sw, ph, pw, groups};
        for (int32_t k = 0; k < 13; k++) op[8 + k] = v[k];
        in_n = hh * ww * c;
        out_n = ho * wo * (kind == HAR_G_CONV ? co : c);
        ch = co;
        row = kh * kw * (c / groups);
        w_n = co * row;
    } else if (kind == HAR_G_LINEAR) {
        op[8] = range(&st, 1, 200);
        op[13] = ch = range(&st, 1, 24);
        in_n = op[8];
        out_n = ch;
        row = op[8];
        w_n = ch * row;
    } else if (kind == HAR_G_MEAN) {
        op[8] = range(&st, 1, 144);
        op[10] = range(&st, 1, 24);
        in_n = op[8] * op[10];
        out_n = op[10];
        op[25] = mult(&st);
        op[26] = range(&st, -31, 30);
    } else { /* add, relu */
        op[8] = in_n = out_n = range(&st, 1, 300);
        if (kind == HAR_G_ADD) {
            in2_n = in_n;
            op[9] = 20;
            op[27] = edge8(&st);
            op[25] = mult(&st);
            op[26] = range(&st, -31, 0);
            op[28] = mult(&st);
            op[29] = range(&st, -31, 0);
            op[30] = mult(&st);
            op[31] = range(&st, -31, 0);
        }
    }
    op[21] = edge8(&st);
    op[22] = edge8(&st);
    if (kind != HAR_G_MAXPOOL && kind != HAR_G_AVGPOOL && kind != HAR_G_MEAN) {
        lo = range(&st, -128, 127);
        hi = range(&st, lo, 127);
    }
    op[23] = lo;
    op[24] = hi;
    const int32_t palette = (kind == HAR_G_CONV || kind == HAR_G_LINEAR) && range(&st, 0, 1);
    const size_t a_n = (size_t)in_n + (size_t)in2_n + (size_t)out_n + (size_t)(palette ? row : 0);
    const int32_t w_bytes = palette ? ch * ((row + 1) / 2) : w_n;
    const size_t b_n = (size_t)(w_n ? 12 * ch + (palette ? 16 : 0) + w_bytes : 0);
    uint8_t *arena = exact(a_n), *blob = exact(b_n);
    fill8(&st, (int8_t *)arena, in_n + in2_n);
    op[1] = 0;
    op[2] = in2_n ? in_n : -1;
    op[3] = in_n + in2_n;
    if (w_n) {
        const int32_t terms = row, bound = (int32_t)((0x7FFFFFFFll - (int64_t)terms * 255 * 128) > 0 ?
                                                     (0x7FFFFFFFll - (int64_t)terms * 255 * 128) : 0);
        for (int32_t o = 0; o < ch; o++) {
            const int32_t b = range(&st, 0, 3) == 0 ? (range(&st, 0, 1) ? bound : -bound) : range(&st, -bound / 2, bound / 2);
            const int32_t m = mult(&st), e = range(&st, -31, 30);
            memcpy(blob + 4 * o, &b, 4);
            memcpy(blob + 4 * (ch + o), &m, 4);
            memcpy(blob + 4 * (2 * ch + o), &e, 4);
        }
        op[5] = 0;
        op[6] = 4 * ch;
        op[7] = 8 * ch;
        if (palette) {
            op[27] = HAR_G_PALETTE4;
            op[28] = 12 * ch;
            op[29] = op[3] + out_n;
            fill8(&st, (int8_t *)(blob + 12 * ch), 16);
            op[4] = 12 * ch + 16;
            for (int32_t k = 0; k < w_bytes; k++) blob[op[4] + k] = (uint8_t)next(&st);
        } else {
            op[4] = 12 * ch;
            fill8(&st, (int8_t *)(blob + op[4]), w_n);
        }
    } else {
        op[4] = op[5] = op[6] = op[7] = -1;
    }
    check(har_g_op_run(op, blob, arena) == 0, "har_g_op_run refused a valid op");
    const int8_t *out = (const int8_t *)(arena + op[3]);
    for (int32_t k = 0; k < out_n; k++) check(out[k] >= lo && out[k] <= hi, "output outside [act_min, act_max]");
    free(arena);
    free(blob);
    return 0;
}

#ifdef HAR_FUZZ_STANDALONE
#include "fuzz_main.h"
#endif
