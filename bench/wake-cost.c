/*
 * What it costs a thread to wake another one, on this machine: the time the waker spends in one
 * write(2) to a pipe that a reader is blocked on, when the reader sleeps on an idle other core
 * (the kernel must send that core an interprocessor interrupt), and when nobody waits. Built and
 * run by bench/wake-cost.sh; see BENCHMARKS.md, "The ceiling".
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int ping[2], pong[2];

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("sched_setaffinity");
        exit(1);
    }
}

static void *echo(void *arg) {
    pin(*(int *)arg);
    char b;
    while (read(ping[0], &b, 1) == 1 && write(pong[1], &b, 1) == 1) {
    }
    return NULL;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct cost {
    double median, mean;
};

static struct cost summarize(double *v, int n) {
    double sum = 0;
    for (int i = 0; i < n; i++) sum += v[i];
    qsort(v, n, sizeof *v, cmp);
    struct cost c = {v[n / 2] / 1000, sum / n / 1000};
    return c;
}

/* Time of write(2) that wakes the echo thread asleep on `reader_cpu`, from `writer_cpu`. */
static struct cost wake_cost(int writer_cpu, int reader_cpu, int n) {
    pthread_t t;
    if (pipe(ping) || pipe(pong) || pthread_create(&t, NULL, echo, &reader_cpu)) {
        perror("setup");
        exit(1);
    }
    pin(writer_cpu);
    double *v = malloc(n * sizeof *v);
    char b = 'x';
    for (int i = 0; i < n; i++) {
        /* 200 us apart: the reader is asleep again and an idle core has gone idle */
        struct timespec gap = {0, 200000};
        nanosleep(&gap, NULL);
        double t0 = now_ns();
        if (write(ping[1], &b, 1) != 1) exit(1);
        v[i] = now_ns() - t0;
        if (read(pong[0], &b, 1) != 1) exit(1);
    }
    close(ping[1]);
    pthread_join(t, NULL);
    close(ping[0]); close(pong[0]); close(pong[1]);
    struct cost c = summarize(v, n);
    free(v);
    return c;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 5000;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    /* no waiter: write then read back on one thread */
    int p[2];
    if (pipe(p)) return 1;
    pin(0);
    char b = 'x';
    double *v = malloc(n * sizeof *v);
    for (int i = 0; i < n; i++) {
        double t0 = now_ns();
        if (write(p[1], &b, 1) != 1) return 1;
        v[i] = now_ns() - t0;
        if (read(p[0], &b, 1) != 1) return 1;
    }
    struct cost idle = summarize(v, n);
    printf("| write(2) | median | mean |\n|---|---:|---:|\n");
    printf("| nobody waiting | %.1f µs | %.1f µs |\n", idle.median, idle.mean);
    if (cpus >= 2) {
        struct cost a = wake_cost(1, 0, n), b = wake_cost(0, 1, n);
        printf("| waking a reader asleep on another, idle core (core 1 → 0) | %.1f µs | %.1f µs |\n", a.median, a.mean);
        printf("| waking a reader asleep on another, idle core (core 0 → 1) | %.1f µs | %.1f µs |\n", b.median, b.mean);
    }
    return 0;
}
