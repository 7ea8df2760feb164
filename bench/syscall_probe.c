/* Times sysinfo(2) or sched_getaffinity(2), one call at a time.
 *
 *   syscall_probe sysinfo|getaffinity N [GAP_US]
 *                                         -> "median_ns p90_ns p99_ns first_ns"
 *                                            (GAP_US: sleep that long between calls,
 *                                            so each call finds the supervisor idle)
 *   syscall_probe once                    -> one sysinfo call, then exit
 *
 * Built static by bench/syscall_latency.py, so it runs in any container.
 * clock_gettime(CLOCK_MONOTONIC) around each call; the vDSO makes the
 * clock itself cost ~20 ns.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int by_value(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    struct sysinfo info;
    if (argc == 2 && strcmp(argv[1], "once") == 0)
        return sysinfo(&info) != 0;
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s sysinfo|getaffinity N [GAP_US] | once\n", argv[0]);
        return 2;
    }
    int affinity = strcmp(argv[1], "getaffinity") == 0;
    long n = atol(argv[2]);
    long gap_us = argc == 4 ? atol(argv[3]) : 0;
    struct timespec gap = {gap_us / 1000000, (gap_us % 1000000) * 1000};
    if (n <= 0) return 2;
    long long *samples = malloc(sizeof(long long) * n);
    unsigned long mask[16];
    for (long i = 0; i < n; i++) {
        if (gap_us > 0)
            nanosleep(&gap, NULL);
        long long start = now_ns();
        long rc = affinity ? syscall(SYS_sched_getaffinity, 0, sizeof mask, mask) : syscall(SYS_sysinfo, &info);
        samples[i] = now_ns() - start;
        if (rc < 0) { perror(argv[1]); return 1; }
    }
    long long first = samples[0];
    qsort(samples, n, sizeof(long long), by_value);
    printf("%lld %lld %lld %lld\n", samples[n / 2], samples[n * 9 / 10], samples[n * 99 / 100], first);
    return 0;
}
