/* issue 13, a pooled forker per run cgroup: the per-command cost of
 *   A  clone3(CLONE_VM|CLONE_VFORK|CLONE_INTO_CGROUP) + the 7-insn clone3 filter + exec /bin/true
 *      (today's cgroup launcher, into a reused cgroup)
 *   B  vfork (clone CLONE_VM|CLONE_VFORK) from a forker already in the cgroup with the filter loaded
 *      + exec /bin/true (the proposed design)
 *   V  vfork + exec from a process in no cgroup of its own, no filter of its own (a run without a cgroup)
 *   C  A without the filter (clone3 INTO_CGROUP alone);  F  vfork + the filter, no cgroup (the filter alone)
 * FB_MODES picks them (default ABV), in turns; FB_POLICY=DIR loads the real policy first (see load_policy).
 * Each block runs in a fresh worker process (A, V: in the bench's cgroup; B: born into the run cgroup
 * and loading the filter once).  Per command: wall time fork -> reaped, the child's CPU (wait4 rusage)
 * and the worker's own CPU (CLOCK_PROCESS_CPUTIME_ID).  Usage: forkbench ROUNDS N PAUSE_US */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <dirent.h>
#include <unistd.h>

#include "clone.h"

#define ROOT "/sys/fs/cgroup/unified"
static char stack[64 * 1024] __attribute__((aligned(16)));
static int cg_fd = -1;
static char *const argv_true[] = {"/bin/true", NULL};
static char *const envp[] = {NULL};

/* load nr; jeq 435 ? next : allow; load arch; jeq x86_64 -> errno; jeq i386 -> errno; allow; ERRNO(ENOSYS) */
static struct sock_filter clone3_filter[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 435, 0, 3),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 4),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0xc000003e, 2, 0),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x40000003, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
};

static int load_filter(void)
{
    struct sock_fprog prog = {.len = 7, .filter = clone3_filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -1;
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

/* the container's policy as the real processes have it (FB_POLICY=DIR: whole.bpf, opened.bpf from
 * sandboxlib's compile_policy/clone3_split of Docker's default): A's launcher the policy with clone3 allowed,
 * B's forker that too (then the small filter), V's process the whole policy */
static void load_policy(char mode)
{
    const char *dir = getenv("FB_POLICY");
    if (!dir)
        return;
    static struct sock_filter prog[4096];
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, mode == 'V' || mode == 'F' ? "whole.bpf" : "opened.bpf");
    FILE *f = fopen(path, "rb");
    size_t k = f ? fread(prog, sizeof(*prog), 4096, f) : 0;
    struct sock_fprog fp = {.len = (unsigned short)k, .filter = prog};
    if (!k || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
        syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fp) < 0)
        _exit(7);
    fclose(f);
}

static int child_filter_exec(void *arg)
{
    (void)arg;
    if (load_filter() < 0)
        _exit(126);
    execve("/bin/true", argv_true, envp);
    _exit(127);
}

static int child_exec(void *arg)
{
    (void)arg;
    execve("/bin/true", argv_true, envp);
    _exit(127);
}

/* clone3 with vfork semantics, the child running fn on our spare stack (the project's clone3 trampoline) */
static pid_t clone3_into(int fd, int (*fn)(void *))
{
    struct clone_args ca = {.flags = CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP,
                            .exit_signal = SIGCHLD,
                            .stack = (uint64_t)(uintptr_t)stack,
                            .stack_size = sizeof(stack),
                            .cgroup = (uint64_t)fd};
    long r = sbx_clone3_run(&ca, fn, NULL);
    if (r < 0)
        errno = (int)-r;
    return r < 0 ? -1 : (pid_t)r;
}

static double ns(struct timespec t)
{
    return t.tv_sec * 1e9 + t.tv_nsec;
}
static double now(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return ns(t);
}

/* one block of n commands in this (worker) process; writes wall, child cpu, self cpu (ns) per command */
static void block(char mode, int n, long pause_us, double *out)
{
    for (int i = 0; i < n; i++) {
        if (pause_us) {
            struct timespec p = {pause_us / 1000000, (pause_us % 1000000) * 1000};
            nanosleep(&p, NULL);
        }
        double t0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
        pid_t pid =
            mode == 'A'   ? clone3_into(cg_fd, child_filter_exec)
            : mode == 'C' ? clone3_into(cg_fd, child_exec)
            : mode == 'F'
                ? clone(child_filter_exec, stack + sizeof(stack), CLONE_VM | CLONE_VFORK | SIGCHLD, NULL)
                : clone(child_exec, stack + sizeof(stack), CLONE_VM | CLONE_VFORK | SIGCHLD, NULL);
        if (pid < 0) {
            perror("fork");
            _exit(2);
        }
        int st;
        struct rusage ru;
        if (wait4(pid, &st, 0, &ru) != pid || !WIFEXITED(st) || WEXITSTATUS(st)) {
            fprintf(stderr, "child %c status %x\n", mode, st);
            _exit(3);
        }
        double t1 = now(CLOCK_MONOTONIC), c1 = now(CLOCK_PROCESS_CPUTIME_ID);
        out[3 * i] = t1 - t0;
        out[3 * i + 1] = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e9 +
                         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e3;
        out[3 * i + 2] = c1 - c0;
    }
}

/* ticks of busy CPU of the whole machine (/proc/stat: all but idle and iowait) */
static double machine_busy(void)
{
    unsigned long long v[10] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f || fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                     &v[5], &v[6], &v[7]) != 8)
        exit(6);
    fclose(f);
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
}

/* ticks of CPU of every kernel thread (kthreadd's children) alive now */
static double kthread_cpu(void)
{
    double sum = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[300], line[1024];
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t k = fread(line, 1, sizeof(line) - 1, f);
        fclose(f);
        line[k] = 0;
        char *p = strrchr(line, ')');
        int ppid;
        unsigned long ut, st;
        if (p && sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ppid, &ut, &st) == 3 &&
            (ppid == 2 || !strcmp(e->d_name, "2")))
            sum += (double)(ut + st);
    }
    closedir(d);
    return sum;
}

static char base[256], run[300];
static void remove_cgroups(void)
{
    rmdir(run);
    rmdir(base);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void stats(const char *label, double *v, int n)
{
    qsort(v, n, sizeof(*v), cmp);
    printf(" %s p50 %7.1f p90 %7.1f us |", label, v[n / 2] / 1e3, v[n * 9 / 10] / 1e3);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 5, n = argc > 2 ? atoi(argv[2]) : 200;
    long pause_us = argc > 3 ? atol(argv[3]) : 0;
    snprintf(base, sizeof(base), ROOT "/sandboxlib-forkbench-%d", getpid());
    snprintf(run, sizeof(run), "%s/run0", base);
    if (mkdir(base, 0755) < 0 || mkdir(run, 0755) < 0) {
        perror("mkdir");
        return 1;
    }
    atexit(remove_cgroups);
    cg_fd = open(run, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    const char *modes = getenv("FB_MODES") ? getenv("FB_MODES") : "ABV";
    int nm = (int)strlen(modes);
    double *all[8];
    for (int m = 0; m < nm; m++)
        all[m] = calloc((size_t)rounds * n * 3, sizeof(double));
    double *mach[8], *kth[8];
    for (int m = 0; m < nm; m++)
        mach[m] = calloc(rounds, sizeof(double)), kth[m] = calloc(rounds, sizeof(double));
    /* the machine's busy rate while we sleep (other users), subtracted per block */
    double tick = 1e9 / (double)sysconf(_SC_CLK_TCK), i0 = machine_busy(), j0 = kthread_cpu(),
           w0 = now(CLOCK_MONOTONIC);
    sleep(1);
    double iw = now(CLOCK_MONOTONIC) - w0, idle_rate = (machine_busy() - i0) * tick / iw,
           kidle_rate = (kthread_cpu() - j0) * tick / iw;
    printf("idle: machine busy %.3f CPU, kthreads %.4f CPU\n", idle_rate, kidle_rate);
    for (int r = 0; r < rounds; r++)
        for (int m = 0; m < nm; m++) {
            int p[2];
            if (pipe(p) < 0)
                return 1;
            double *buf = calloc((size_t)n * 3, sizeof(double));
            double m0 = machine_busy(), k0 = kthread_cpu(), t0 = now(CLOCK_MONOTONIC);
            pid_t w;
            if (modes[m] == 'B') { /* the forker: born into the run cgroup, the filter loaded once */
                struct clone_args ca = {
                    .flags = CLONE_INTO_CGROUP, .exit_signal = SIGCHLD, .cgroup = (uint64_t)cg_fd};
                w = (pid_t)syscall(SYS_clone3, &ca, sizeof(ca));
                if (w == 0)
                    load_policy('B');
                if (w == 0 && load_filter() < 0)
                    _exit(4);
            } else
                w = fork();
            if (w == 0) {
                close(p[0]);
                if (modes[m] != 'B')
                    load_policy(modes[m]);
                block(modes[m], n, pause_us, buf);
                size_t len = (size_t)n * 3 * sizeof(double);
                for (char *q = (char *)buf; len;) {
                    ssize_t k = write(p[1], q, len);
                    if (k <= 0)
                        _exit(5);
                    q += k, len -= (size_t)k;
                }
                _exit(0);
            }
            close(p[1]);
            size_t len = (size_t)n * 3 * sizeof(double), got = 0;
            while (got < len) {
                ssize_t k = read(p[0], (char *)buf + got, len - got);
                if (k <= 0)
                    break;
                got += (size_t)k;
            }
            close(p[0]);
            int st;
            waitpid(w, &st, 0);
            if (got != len || !WIFEXITED(st) || WEXITSTATUS(st)) {
                fprintf(stderr, "worker %c failed %x\n", modes[m], st);
                return 1;
            }
            double tick = 1e9 / (double)sysconf(_SC_CLK_TCK), wall = now(CLOCK_MONOTONIC) - t0;
            mach[m][r] = ((machine_busy() - m0) * tick - idle_rate * wall) / n;
            kth[m][r] = ((kthread_cpu() - k0) * tick - kidle_rate * wall) / n;
            memcpy(all[m] + (size_t)r * n * 3, buf, len);
            free(buf);
        }
    int total = rounds * n;
    for (int m = 0; m < nm; m++) {
        double *wall = malloc(total * sizeof(double)), *child = malloc(total * sizeof(double)),
               *self = malloc(total * sizeof(double)), *sum = malloc(total * sizeof(double));
        for (int i = 0; i < total; i++) {
            wall[i] = all[m][3 * i], child[i] = all[m][3 * i + 1], self[i] = all[m][3 * i + 2];
            sum[i] = child[i] + self[i];
        }
        printf("%c:", modes[m]);
        stats("wall", wall, total);
        stats("cpu(child+forker)", sum, total);
        stats("child", child, total);
        stats("forker", self, total);
        stats("machine/cmd", mach[m], rounds);
        stats("kthreads/cmd", kth[m], rounds);
        printf("\n");
    }
    close(cg_fd);
    return 0;
}
