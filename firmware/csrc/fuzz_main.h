/* The standalone driver of the fuzz targets (fuzz_har_int8.c, fuzz_har_graph.c) when gcc has no
 * libFuzzer: included at the end of a target built with -DHAR_FUZZ_STANDALONE, after its splitmix64 and
 * LLVMFuzzerTestOneInput. `target RUNS SEED [START]` runs inputs START..RUNS-1, input i made by SplitMix64
 * from (SEED, i) alone; prints "har-fuzz: N runs", or "har-fuzz: died on input i" when a sanitizer (with
 * abort_on_error=1) or an invariant aborts. Needs <signal.h>, <stdio.h>, <stdlib.h>. */
#ifndef HAR_FUZZ_MAIN_H
#define HAR_FUZZ_MAIN_H

enum { MAX_INPUT_BYTES = 256 };

static volatile long long current_input = -1; /* the input being run, for the death message */

/* Sanitizers stop through abort() when run with abort_on_error=1 (firmware/hygiene.py sets it), as do the
 * invariants; a handler of a signal raised by abort() may call library functions (C99 7.14.1.1). */
static void on_abort(int sig) {
    (void)sig;
    if (current_input >= 0)
        fprintf(stderr, "har-fuzz: died on input %lld\n", current_input);
    else
        fprintf(stderr, "har-fuzz: died after the last input\n");
}

static int parse_count(const char *s, unsigned long long *out) {
    char *end = NULL;
    if (!s[0] || s[0] == '-') return 0;
    *out = strtoull(s, &end, 10);
    return *end == '\0';
}

int main(int argc, char **argv) {
    unsigned long long runs = 0, seed = 0, start = 0;
    if ((argc != 3 && argc != 4) || !parse_count(argv[1], &runs) || !parse_count(argv[2], &seed) ||
        (argc == 4 && !parse_count(argv[3], &start)) || runs > (1ULL << 62)) {
        fprintf(stderr, "usage: %s RUNS SEED [START]\n", argv[0]);
        return 2;
    }
    signal(SIGABRT, on_abort);
    unsigned long long done = 0;
    for (unsigned long long i = start; i < runs; i++) {
        /* input i depends on (seed, i) only: any input replays alone */
        uint64_t s = i, state = seed ^ splitmix64(&s);
        const size_t size = 1 + (size_t)(splitmix64(&state) % MAX_INPUT_BYTES);
        uint8_t *input = malloc(size); /* exact size, as libFuzzer does: reading past it is a finding */
        if (!input) return 3;
        for (size_t j = 0; j < size; j++) input[j] = (uint8_t)(splitmix64(&state) >> 56);
        current_input = (long long)i;
        LLVMFuzzerTestOneInput(input, size);
        free(input);
        done++;
    }
    current_input = -1;
    printf("har-fuzz: %llu runs\n", done);
    return 0;
}
#endif
