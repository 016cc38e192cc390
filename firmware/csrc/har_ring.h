/* The raw-sample ring buffer and runtime state shared by har-memopt's firmware runtimes (har_model.h API). */
#ifndef HAR_RING_H
#define HAR_RING_H
#include <stdint.h>

#include "har_model.h"

extern int16_t har_ring[HAR_T * 3];
struct har_state_s {
    int32_t head;   /* next slot to write = oldest sample once the ring is full */
    int32_t filled; /* samples in the ring, up to HAR_T */
    int32_t since;  /* samples since the last result */
    int32_t ready;  /* 1 after a successful har_init */
};
extern struct har_state_s har_state;

/* store one x,y,z sample; returns the ring index of the oldest sample when a window is due (once HAR_T
 * samples are in, then every HAR_STEP samples: the windows har.windows cuts from a continuous segment
 * start at 0, STEP, 2 STEP, ...), else -1 */
int32_t har_ring_push(const int16_t xyz[3]);
#endif
