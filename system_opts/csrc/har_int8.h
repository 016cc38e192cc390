/* Int8 kernels of har-memopt (har_int8.c): the op record, the table runner and the input quantizer. */
#ifndef HAR_INT8_H
#define HAR_INT8_H
#include <stdint.h>

enum { HAR_QUANTIZE = 0, HAR_GEMM = 1, HAR_MAXPOOL = 2, HAR_GAP = 3, HAR_DEQUANTIZE = 4, HAR_DECODE = 5,
       HAR_DWCONV = 6 };
/* gemm loop orders (i[11]); every one computes the same integers */
enum { HAR_GEMM_DOT = 0, HAR_GEMM_TIME_MAJOR = 1, HAR_GEMM_IM2COL16 = 2, HAR_GEMM_CSR = 3, HAR_GEMM_PALETTE4 = 4 };

/* One op: its kind, integer attributes, float attributes and pointers to its buffers (arena) and arrays
 * (weights). The meaning of every slot is documented at the kernel in har_int8.c. */
struct har_op {
    int32_t kind;
    int32_t i[12];
    float f[2];
    void *p[8];
};

int har_op_run(const struct har_op *op);
int har_run(const struct har_op *ops, int32_t n);
int har_run_repeat(const struct har_op *ops, int32_t n, int32_t repeats);
int32_t har_abi_version(void);

/* The input quantizer of every runtime (numpy reference: model_opts/quant/intref.quantize_input):
 * NaN -> zero_point (the normalised value 0: the channel's training mean); otherwise clamp to [-128, 127]
 * (so +-Inf saturate) and round half to even. Clamping first is the same as rounding first (the bounds
 * are integers and rounding is monotonic); after it |v| <= 128, where adding and subtracting 1.5 * 2^23
 * rounds to an integer half-to-even in the default rounding mode: no libm, exact on every target. On an
 * FPU with the saturation extension (M4F) the round and clamp are VCVTR + SSAT instead (same results). */
static inline int8_t har_q8_finite(float v);
static inline int8_t har_q8(float v, int32_t zero_point) {
    if (v != v) return (int8_t)zero_point;
    return har_q8_finite(v);
}

/* har_q8 of a value known not to be NaN (the firmware's preprocessing of int16 counts: every step is
 * finite) */
static inline int8_t har_q8_finite(float v) {
#if defined(__ARM_FP) && defined(__ARM_FEATURE_SAT)
    /* Cortex-M4F: VCVTR rounds to int32 in the FPSCR mode (round to nearest even at reset; saturating),
     * SSAT clamps to int8: the same integer in 3 instructions */
    int32_t q;
    __asm__("vcvtr.s32.f32 %0, %1" : "=t"(v) : "t"(v));
    __builtin_memcpy(&q, &v, 4);
    __asm__("ssat %0, #8, %1" : "=r"(q) : "r"(q));
    return (int8_t)q;
#else
    v = v > -128.0f ? v : -128.0f;
    v = v < 127.0f ? v : 127.0f;
    v = (v + 12582912.0f) - 12582912.0f;
    return (int8_t)(int32_t)v;
#endif
}
#endif
