/* Ring buffer of the last HAR_T raw samples (har_ring.h); static, no malloc, not reentrant. */
#include "har_ring.h"

int16_t har_ring[HAR_T * 3];
struct har_state_s har_state;

void har_reset(void) {
    har_state.head = 0;
    har_state.filled = 0;
    har_state.since = 0;
}

int32_t har_ring_push(const int16_t xyz[3]) {
    int16_t *slot = har_ring + har_state.head * 3;
    slot[0] = xyz[0];
    slot[1] = xyz[1];
    slot[2] = xyz[2];
    har_state.head = har_state.head + 1 == HAR_T ? 0 : har_state.head + 1;
    if (har_state.filled < HAR_T) {
        har_state.filled++;
        if (har_state.filled < HAR_T) return -1;
    } else if (++har_state.since < HAR_STEP) {
        return -1;
    }
    har_state.since = 0;
    return har_state.head;
}
