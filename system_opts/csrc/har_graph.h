/* Int8 graph kernels of har-memopt (har_graph.c): any supported PyTorch model as an op table.
 *
 * An op is HAR_G_OP_WORDS int32 words (firmware/graph_program.py writes them, model_opts/graph/intref.py is
 * the specification): [0] kind, [1] input and [2] second input (add; else -1) and [3] output as byte
 * offsets into the arena, [4] weight, [5] bias, [6] multiplier, [7] shift as byte offsets into the weight
 * blob (-1: none), then the attributes, whose slots are documented at each kernel. Tensors are int8,
 * channel-last (H, W, C). */
#ifndef HAR_GRAPH_H
#define HAR_GRAPH_H
#include <stdint.h>

#define HAR_G_OP_WORDS 32
enum { HAR_G_CONV = 1, HAR_G_LINEAR = 2, HAR_G_MAXPOOL = 3, HAR_G_AVGPOOL = 4, HAR_G_MEAN = 5, HAR_G_ADD = 6,
       HAR_G_RELU = 7 };
enum { HAR_G_DENSE = 0, HAR_G_PALETTE4 = 1 }; /* conv / linear weight storage (op[27]) */
#define HAR_G_ERR_KIND (-1)

/* run one op / a table of n ops; 0, or HAR_G_ERR_KIND (unknown or disabled kind) */
int32_t har_g_op_run(const int32_t *op, const uint8_t *weights, uint8_t *arena);
int32_t har_g_run(const int32_t *ops, int32_t n_ops, const uint8_t *weights, uint8_t *arena);
/* float -> int8 by the reference's input rule (har_q8 of x * inv_scale + offset) */
void har_g_quantize(const float *x, int32_t n, float inv_scale, float offset, int32_t zero_point, int8_t *y);
/* CRC-32 (IEEE, reflected 0xEDB88320, init and final xor 0xFFFFFFFF) of n bytes */
uint32_t har_g_crc32(const uint8_t *p, uint32_t n);
int32_t har_g_abi_version(void);
#endif
