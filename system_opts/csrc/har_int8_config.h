/* Kernels of the host build (system_opts.cbuild): everything. An export writes its own har_int8_config.h. */
#ifndef HAR_INT8_CONFIG_H
#define HAR_INT8_CONFIG_H
#define HAR_WITH_QUANTIZE 1
#define HAR_WITH_DEQUANTIZE 1
#define HAR_WITH_GEMM_DOT 1
#define HAR_WITH_GEMM_TIME_MAJOR 1
#define HAR_WITH_GEMM_IM2COL16 1
#define HAR_WITH_GEMM_CSR 1
#define HAR_WITH_GEMM_PALETTE4 1
#define HAR_WITH_MAXPOOL_STRIDED 1
#define HAR_WITH_DWCONV 1
/* the host session runs dense weights (decoding yields the same integers; it is a device trade-off of flash
 * for RAM and instructions): har_decode.c is built and tested through an export's host library instead */
#define HAR_WITH_DECODE 0
#endif
