/* TFLite's int8 fixed-point primitives (model_opts/quant/fixedpoint.py), shared by the flat kernels
 * (har_int8.c) and the graph kernels (har_graph.c): one definition of the rounding rules. */
#ifndef HAR_FIXEDPOINT_H
#define HAR_FIXEDPOINT_H
#include <stdint.h>

static inline int32_t srdhm(int32_t a, int32_t b) {
    /* gemmlowp SaturatingRoundingDoublingHighMul: (ab + nudge) / 2^31 truncated toward zero, nudge 2^30 for
     * ab >= 0 and 1 - 2^30 below, which is floor((ab + 2^30) / 2^31) in both cases (for ab < 0:
     * trunc(t / 2^31) = floor((t + 2^31 - 1) / 2^31) with t = ab + 1 - 2^30): one add and an arithmetic
     * shift, no branch (>> of a negative value is arithmetic in GCC and Clang) */
    /* its saturation case a == b == INT32_MIN cannot occur: multipliers are >= 0 (the kernels' contract) */
    return (int32_t)(((int64_t)a * (int64_t)b + (1LL << 30)) >> 31);
}

static inline int32_t rdbpot(int32_t x, int32_t e) {
    /* gemmlowp RoundingDivideByPOT, 0 <= e <= 31: ties away from zero; 32-bit only (a Cortex-M has no
     * single-instruction 64-bit shift) */
    const uint32_t mask = (1u << e) - 1u;
    const int32_t rem = (int32_t)((uint32_t)x & mask);
    const int32_t threshold = (int32_t)(mask >> 1) + (x < 0);
    return (x >> e) + (rem > threshold);
}

static inline int32_t requantize(int32_t x, int32_t m, int32_t shift) {
    /* TFLite MultiplyByQuantizedMultiplier; the left shift saturates (UB in TFLite's C) */
    if (shift > 0) {
        const int64_t xs = (int64_t)x * (int64_t)(1u << shift);
        x = xs > INT32_MAX ? INT32_MAX : (xs < INT32_MIN ? INT32_MIN : (int32_t)xs);
        return srdhm(x, m);
    }
    return rdbpot(srdhm(x, m), -shift);
}

static inline int32_t clamp8(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : (v > hi ? hi : v); }
/* DSP-extension helpers (Cortex-M4 and up) of the SMLAD loops */
#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
/* a 4-byte load from any alignment (the builtin inlines to one LDR: -ffreestanding disables plain memcpy's) */
static inline int32_t load32(const void *p) {
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}
/* SXTB16 of the value rotated by 8 (bytes 1 and 3) in one instruction; GCC 12's <arm_acle.h> has no __ror
 * and does not fold a rotate into SXTB16 */
static inline int32_t sxtb16_ror8(int32_t v) {
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}
#endif
#endif
