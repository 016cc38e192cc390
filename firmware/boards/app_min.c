/* The FOOTPRINT firmware: what a user's minimal application links. Initialise the model, then forever
   read x, y, z from a memory-mapped "sensor" (volatile, so the compiler keeps every read), push each
   sample and keep the label of every completed window in a volatile global (so the classification is
   never optimised away). It is linked and measured, not run; setting har_app_stop (e.g. from a debugger)
   ends the loop so it can be run if wanted. Exit codes: 0 stopped, 2 CRC, 3 library error. */
#include <stdint.h>
#include "har_model.h"

volatile int16_t har_app_sensor[3];
volatile int32_t har_app_label = -1;
volatile int32_t har_app_stop;

int main(void) {
    int rc = har_init();
    if (rc == HAR_ERR_CRC) return 2;
    if (rc != HAR_OK) return 3;
    while (!har_app_stop) {
        int16_t xyz[3] = {har_app_sensor[0], har_app_sensor[1], har_app_sensor[2]};
        har_result r;
        rc = har_push(xyz, &r);
        if (rc == HAR_READY) har_app_label = r.label;
        else if (rc < 0) return 3;
    }
    return 0;
}
