/* Issue 16 measurement prototype: CPU of one seccomp(SET_MODE_FILTER) load
 * (conversion to eBPF, JIT, the action cache's emulation of every syscall
 * number) against the filter's length.  Each load runs in a fresh forked
 * child (as sbx-init does), timed with its thread CPU clock; sizes are
 * alternated per round.  Filters: a file of classic BPF (sandboxlib's
 * compiled Docker policy: python -c 'compile_policy(...)' > docker.bpf) and
 * synthetic chains "jeq nr, 0, 1; ret ERRNO" of K tests (2K+3 instructions).
 * cc -O2 -o seccomp_load seccomp_load.c ; ./seccomp_load ROUNDS FILE.bpf... */
#define _GNU_SOURCE
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

/* args0: the chain starts with a load of args[0], where the action cache's
 * emulation gives up at once: the load then costs the conversion and JIT only */
static struct sock_fprog chain(int k, int args0)
{
    int n = 2 * k + 3, i = 0;
    struct sock_filter *f = calloc(n, sizeof *f);
    f[i++] =
        (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, args0 ? offsetof(struct seccomp_data, args)
                                                                     : offsetof(struct seccomp_data, nr));
    for (int j = 0; j < k; j++) {
        f[i++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 1000 + j, 0, 1);
        f[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 1);
    }
    f[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    f[i++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    return (struct sock_fprog){.len = n, .filter = f};
}

static double load_once(struct sock_fprog *p)
{
    int fds[2];
    if (pipe(fds) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        double t0 = cpu_now();
        long r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, p);
        double t = r == 0 ? cpu_now() - t0 : -1;
        if (write(fds[1], &t, sizeof t) < 0)
            _exit(1);
        _exit(0);
    }
    close(fds[1]);
    double t = -1;
    if (read(fds[0], &t, sizeof t) != sizeof t)
        t = -1;
    close(fds[0]);
    waitpid(pid, NULL, 0);
    return t;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 500;
    enum { NC = 9, NF = NC + 8 };
    struct sock_fprog f[NF];
    const char *name[NF] = {"chain", "chain",    "chain",    "chain",   "chain",
                            "chain", "jit-only", "jit-only", "jit-only"};
    int ks[] = {0, 15, 30, 100, 216, 500, 30, 100, 216};
    for (int i = 0; i < 9; i++)
        f[i] = chain(ks[i], i >= 6);
    int nf = NC;
    for (int a = 2; a < argc && nf < NF; a++, nf++) { /* classic BPF files */
        FILE *in = fopen(argv[a], "rb");
        struct sock_filter *buf = calloc(4096, sizeof *buf);
        int n = in ? (int)fread(buf, sizeof *buf, 4096, in) : 0;
        f[nf] = (struct sock_fprog){.len = n, .filter = buf};
        name[nf] = argv[a];
    }
    double *v[NF];
    for (int i = 0; i < nf; i++)
        v[i] = calloc(rounds, sizeof(double));
    for (int r = 0; r < rounds; r++)
        for (int j = 0; j < nf; j++) {
            int i = (r + j) % nf;
            v[i][r] = load_once(&f[i]);
            if (v[i][r] < 0)
                return fprintf(stderr, "%s refused\n", name[i]), 1;
        }
    printf("%-22s %6s %10s %10s %10s\n", "filter", "insns", "p25", "median", "p75");
    for (int i = 0; i < nf; i++) {
        qsort(v[i], rounds, sizeof(double), cmp);
        printf("%-22s %6d %8.1fus %8.1fus %8.1fus\n", name[i], f[i].len, v[i][rounds / 4], v[i][rounds / 2],
               v[i][3 * rounds / 4]);
    }
    return 0;
}
