/* issue 13: the memory K idle forkers cost (each born into a run cgroup of its own with
 * clone3(CLONE_INTO_CGROUP), the 7-insn filter loaded, then waiting), from /proc/meminfo before and
 * after (MemAvailable, KernelStack, PageTables, Slab) and one forker's smaps_rollup.
 * The forkers are forks of this small C program (the real ones would be of sbx-launcher, a static
 * executable: 128 kB RSS). Usage: forkermem K */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define ROOT "/sys/fs/cgroup/unified"
static struct sock_filter clone3_filter[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 435, 0, 3),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 4),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0xc000003e, 2, 0),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x40000003, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
};

static long meminfo(const char *key)
{
    char line[256];
    long v = -1;
    FILE *f = fopen("/proc/meminfo", "r");
    while (f && fgets(line, sizeof(line), f))
        if (!strncmp(line, key, strlen(key)) && line[strlen(key)] == ':')
            v = atol(line + strlen(key) + 1);
    if (f)
        fclose(f);
    return v;
}

int main(int argc, char **argv)
{
    int k = argc > 1 ? atoi(argv[1]) : 50;
    const char *keys[] = {"MemAvailable", "KernelStack", "PageTables", "Slab", "SUnreclaim"};
    long before[5], after[5];
    char base[128], path[192];
    snprintf(base, sizeof(base), ROOT "/sandboxlib-forkermem-%d", getpid());
    if (mkdir(base, 0755) < 0)
        return 1;
    pid_t *pids = calloc(k, sizeof(pid_t));
    sync();
    sleep(1);
    for (int i = 0; i < 5; i++)
        before[i] = meminfo(keys[i]);
    for (int i = 0; i < k; i++) {
        snprintf(path, sizeof(path), "%s/run%d", base, i);
        mkdir(path, 0755);
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        struct clone_args ca = {.flags = CLONE_INTO_CGROUP, .exit_signal = SIGCHLD, .cgroup = (uint64_t)fd};
        pid_t p = (pid_t)syscall(SYS_clone3, &ca, sizeof(ca));
        if (p == 0) {
            struct sock_fprog prog = {.len = 7, .filter = clone3_filter};
            prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
            for (;;)
                pause();
        }
        close(fd);
        pids[i] = p;
    }
    sleep(1);
    for (int i = 0; i < 5; i++)
        after[i] = meminfo(keys[i]);
    printf("%d forkers (and their %d cgroups):", k, k);
    for (int i = 0; i < 5; i++)
        printf(" %s %+.1f kB each;", keys[i], (double)(after[i] - before[i]) / k);
    printf("\none forker's smaps_rollup:");
    snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", pids[0]);
    FILE *f = fopen(path, "r");
    char line[256];
    while (f && fgets(line, sizeof(line), f))
        if (!strncmp(line, "Rss:", 4) || !strncmp(line, "Pss:", 4) || !strncmp(line, "Private_Dirty:", 14))
            printf(" %.*s", (int)strcspn(line, "\n"), line);
    printf("\n");
    for (int i = 0; i < k; i++) {
        kill(pids[i], SIGKILL);
        waitpid(pids[i], NULL, 0);
    }
    for (int i = 0; i < k; i++) {
        snprintf(path, sizeof(path), "%s/run%d", base, i);
        while (rmdir(path) < 0 && errno == EBUSY)
            usleep(1000);
    }
    rmdir(base);
    return 0;
}
