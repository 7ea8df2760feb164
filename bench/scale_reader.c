/* N containers' readers at once, for bench/scale.py.
 *
 *   scale_reader MOUNT ROUNDS SPEC
 *
 * SPEC (a file): one line per container, "MEMTOTAL_KB CPUS": what that container
 * must see (its memory limit, its CPU count). For each line a child is
 * made with clone(CLONE_NEWPID), so it is pid 1 of a pid namespace of its
 * own, like a container's init; one small process per container, not a
 * Python interpreter (1000 of them would not fit a small machine).
 *
 * Protocol on stdout and stdin, one line each:
 *   -> "pids P1 P2 ..."       the children's host pids, in SPEC order;
 *                             each waits, not yet reading
 *   <- "go"                   (the parent has moved each child into its
 *                             container's cgroup); every child starts at once
 *   -> "C I START END WRONG ERRORS" per child, then "L I NS NS ..." (one
 *      latency per read), and "W I FILE TEXT" for a child's first wrong
 *      value, then "end"
 *
 * A child does ROUNDS rounds of open + read(64 KiB) until EOF + close of
 * MOUNT/proc/{meminfo,stat,uptime,cpuinfo}, timing each with
 * CLOCK_MONOTONIC, and checks what it read against its own container:
 * meminfo's MemTotal, the cpuN lines of stat and the processor blocks of
 * cpuinfo against CPUS, and uptime against the time since it was made (a
 * host's or another container's older uptime shows). A read that fails is
 * an error, a value that is not its own is wrong.
 *
 * Built by bench/scale.py with gcc -O2.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONTAINERS 10000
#define BUF_SIZE 65536
#define NFILES 4
#define WRONG_TEXT 200

static const char *FILES[NFILES] = {"proc/meminfo", "proc/stat", "proc/uptime", "proc/cpuinfo"};

struct slot {               /* one child's results, in memory shared with the parent */
    long long start_ns, end_ns;
    int wrong, errors;
    int first_wrong_file;   /* -1: none */
    char first_wrong[WRONG_TEXT];
};

static long long clock_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Whole file into buf (NUL-terminated); its length, or -1. */
static long read_whole(const char *path, char *buf) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    long total = 0, n;
    while ((n = read(fd, buf + total, BUF_SIZE - 1 - total)) > 0) {
        total += n;
        if (total >= BUF_SIZE - 1)
            total = 0; /* longer than the buffer: keep reading to EOF, judge the tail */
    }
    close(fd);
    if (n < 0)
        return -1;
    buf[total] = '\0';
    return total;
}

static int count_lines(const char *text, const char *prefix, int digit_after) {
    int count = 0;
    size_t len = strlen(prefix);
    for (const char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        if (strncmp(line, prefix, len) == 0 && (!digit_after || (line[len] >= '0' && line[len] <= '9')))
            count++;
    }
    return count;
}

/* 1 if the text is this container's, 0 if not. */
static int is_own(int file, const char *text, long memtotal_kb, int cpus, double age_s) {
    switch (file) {
    case 0: {
        const char *line = strstr(text, "MemTotal:");
        return line && strtol(line + 9, NULL, 10) == memtotal_kb;
    }
    case 1:
        return count_lines(text, "cpu", 1) == cpus;
    case 2:
        /* The container started when this child was made; one second of slack for rounding. */
        return strtod(text, NULL) <= age_s + 1.0;
    default:
        return count_lines(text, "processor", 0) == cpus;
    }
}

static void child(const char *mount, int rounds, long memtotal_kb, int cpus, int go_fd, struct slot *slot,
                  long long *latencies) {
    static char buf[BUF_SIZE];
    char paths[NFILES][4096];
    long long made = clock_ns(CLOCK_BOOTTIME);
    for (int f = 0; f < NFILES; f++)
        snprintf(paths[f], sizeof paths[f], "%s/%s", mount, FILES[f]);
    char c;
    while (read(go_fd, &c, 1) < 0 && errno == EINTR) /* EOF: the parent closed the other end */
        ;
    close(go_fd);
    slot->first_wrong_file = -1;
    slot->start_ns = clock_ns(CLOCK_MONOTONIC);
    for (int r = 0; r < rounds; r++) {
        for (int f = 0; f < NFILES; f++) {
            long long start = clock_ns(CLOCK_MONOTONIC);
            long n = read_whole(paths[f], buf);
            long long end = clock_ns(CLOCK_MONOTONIC);
            latencies[r * NFILES + f] = end - start;
            if (n < 0) {
                slot->errors++;
                continue;
            }
            double age_s = (clock_ns(CLOCK_BOOTTIME) - made) / 1e9;
            if (!is_own(f, buf, memtotal_kb, cpus, age_s)) {
                if (slot->wrong++ == 0) {
                    slot->first_wrong_file = f;
                    snprintf(slot->first_wrong, WRONG_TEXT, "%.*s", WRONG_TEXT - 1, buf);
                }
            }
        }
    }
    slot->end_ns = clock_ns(CLOCK_MONOTONIC);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: scale_reader MOUNT[:MOUNT...] ROUNDS SPEC\n");
        return 2;
    }
    /* Several mounts (the shards of one view): container i reads through
       the mount its spec line names (third field; 0 if none). */
    static char *mounts[MAX_CONTAINERS];
    int mount_count = 0;
    for (char *m = strtok(argv[1], ":"); m && mount_count < MAX_CONTAINERS; m = strtok(NULL, ":"))
        mounts[mount_count++] = m;
    if (mount_count == 0) {
        fprintf(stderr, "scale_reader: no mount\n");
        return 2;
    }
    int rounds = atoi(argv[2]);
    static long memtotal[MAX_CONTAINERS];
    static int cpus[MAX_CONTAINERS];
    static int mount_of[MAX_CONTAINERS];
    int n = 0;
    FILE *spec = fopen(argv[3], "r");
    if (!spec) {
        perror(argv[3]);
        return 2;
    }
    char spec_line[128];
    while (n < MAX_CONTAINERS && fgets(spec_line, sizeof spec_line, spec)) {
        int fields = sscanf(spec_line, "%ld %d %d", &memtotal[n], &cpus[n], &mount_of[n]);
        if (fields < 2)
            break;
        if (fields == 2)
            mount_of[n] = 0;
        if (mount_of[n] < 0 || mount_of[n] >= mount_count) {
            fprintf(stderr, "scale_reader: container %d: no mount %d\n", n, mount_of[n]);
            return 2;
        }
        n++;
    }
    fclose(spec);
    if (n == 0 || rounds < 1) {
        fprintf(stderr, "scale_reader: no containers or no rounds\n");
        return 2;
    }
    size_t per_child = NFILES * (size_t)rounds;
    struct slot *slots = mmap(NULL, n * sizeof *slots, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    long long *latencies = mmap(NULL, n * per_child * sizeof *latencies, PROT_READ | PROT_WRITE,
                                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (slots == MAP_FAILED || latencies == MAP_FAILED) {
        perror("scale_reader: mmap");
        return 1;
    }
    int go[2];
    if (pipe2(go, O_CLOEXEC) < 0) {
        perror("scale_reader: pipe");
        return 1;
    }
    static pid_t pids[MAX_CONTAINERS];
    for (int i = 0; i < n; i++) {
        /* fork() with a new pid namespace: the child is its pid 1. */
        pid_t pid = syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, NULL, NULL, NULL, NULL);
        if (pid < 0) {
            perror("scale_reader: clone(CLONE_NEWPID)");
            for (int j = 0; j < i; j++)
                kill(pids[j], SIGKILL);
            return 1;
        }
        if (pid == 0) {
            close(go[1]);
            prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives the parent */
            child(mounts[mount_of[i]], rounds, memtotal[i], cpus[i], go[0], &slots[i], latencies + i * per_child);
            _exit(0);
        }
        pids[i] = pid;
    }
    close(go[0]);
    printf("pids");
    for (int i = 0; i < n; i++)
        printf(" %d", pids[i]);
    printf("\n");
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin) || strncmp(line, "go", 2) != 0) {
        for (int i = 0; i < n; i++)
            kill(pids[i], SIGKILL);
        while (wait(NULL) > 0)
            ;
        return 1;
    }
    close(go[1]); /* every child's read returns: they all start */
    int failed = 0;
    for (int i = 0; i < n; i++) {
        int status;
        if (waitpid(pids[i], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed++;
    }
    for (int i = 0; i < n; i++) {
        struct slot *s = &slots[i];
        printf("C %d %lld %lld %d %d\n", i, s->start_ns, s->end_ns, s->wrong, s->errors);
        printf("L %d", i);
        for (size_t k = 0; k < per_child; k++)
            printf(" %lld", latencies[i * per_child + k]);
        printf("\n");
        if (s->first_wrong_file >= 0) {
            for (char *p = s->first_wrong; *p; p++)
                if (*p == '\n')
                    *p = '|';
            printf("W %d %s %s\n", i, FILES[s->first_wrong_file], s->first_wrong);
        }
    }
    printf("end %d\n", failed);
    return failed ? 1 : 0;
}
