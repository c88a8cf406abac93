/* Test probe for the seccomp tests, built by the test session (gcc -static).
 * "probe": tries each syscall the default policy blocks or allows and prints
 * "name errno" lines (0: it succeeded).  "getppid": calls getppid (for a
 * kill rule).  Through the x86_64 ABI, the i386 ABI (int 0x80) and x32. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define X32 0x40000000L

static void report(const char *name, long r)
{
    printf("%s %d\n", name, r < 0 ? errno : 0);
}

/* The 32-bit ABI from a 64-bit process: returns -errno or the result. */
static long int80(long nr, long a, long b, long c)
{
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c)
                     : "memory", "r8", "r9", "r10", "r11");
    return (int)ret;
}

static void report80(const char *name, long r)
{
    printf("i386:%s %ld\n", name, r < 0 ? -r : 0);
}

/* clone with flags; a child that gets here exits at once. */
static long try_clone(unsigned long flags)
{
    long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0)
        _exit(0);
    if (pid > 0)
        waitpid((pid_t)pid, NULL, 0);
    return pid;
}

static void probe(void)
{
    report("unshare_user", syscall(SYS_unshare, CLONE_NEWUSER));
    report("unshare_ns", syscall(SYS_unshare, CLONE_NEWNS));
    report("setns", syscall(SYS_setns, 0, 0));
    report("clone_newuser", try_clone(CLONE_NEWUSER));
    report("clone_newns", try_clone(CLONE_NEWNS));
    report("clone_plain", try_clone(0));
    report("fork", try_clone(0));
    report("clone3", syscall(SYS_clone3, NULL, 0));
    report("keyctl", syscall(SYS_keyctl, 0, 0, 0, 0, 0));
    report("add_key", syscall(SYS_add_key, "user", "k", "v", 1, 0));
    report("request_key", syscall(SYS_request_key, "user", "k", NULL, 0));
    report("bpf", syscall(SYS_bpf, 0, NULL, 0));
    report("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
    report("userfaultfd", syscall(SYS_userfaultfd, 0));
    report("io_uring_setup", syscall(SYS_io_uring_setup, 1, NULL));
    report("io_uring_enter", syscall(SYS_io_uring_enter, -1, 0, 0, 0, NULL, 0));
    report("io_uring_register", syscall(SYS_io_uring_register, -1, 0, NULL, 0));
    report("mount", syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, NULL));
    report("umount2", syscall(SYS_umount2, "/tmp", 0));
    report("pivot_root", syscall(SYS_pivot_root, "/", "/"));
    report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    report("kexec_file_load", syscall(SYS_kexec_file_load, -1, -1, 0, "", 0));
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, -1, NULL, 0));
    report("init_module", syscall(SYS_init_module, NULL, 0, ""));
    report("swapon", syscall(SYS_swapon, "/nonexistent", 0));
    report("personality_addr_no_randomize", syscall(SYS_personality, 0x0040000));
    report("personality_query", syscall(SYS_personality, 0xffffffff));
    report("socket_vsock", syscall(SYS_socket, 40, SOCK_STREAM, 0));
    report("socket_alg", syscall(SYS_socket, 38, SOCK_SEQPACKET, 0));
    report("socket_inet", syscall(SYS_socket, 2, SOCK_STREAM, 0));
    report("getpid", syscall(SYS_getpid));
    report("mseal", syscall(462, 0, 0, 0));            /* newer than Debian's libseccomp */
    report("nr_600", syscall(600));                    /* no such syscall (yet) */
    report("x32:unshare_user", syscall(X32 | SYS_unshare, CLONE_NEWUSER));
    report("x32:keyctl", syscall(X32 | SYS_keyctl, 0, 0, 0, 0, 0));
    report80("getpid", int80(20, 0, 0, 0));
    report80("unshare_user", int80(310, CLONE_NEWUSER, 0, 0));
    report80("keyctl", int80(288, 0, 0, 0));
    report80("bpf", int80(357, 0, 0, 0));
    report80("mount", int80(21, 0, 0, 0));
    report80("socket_vsock", int80(359, 40, SOCK_STREAM, 0));
    report80("socket_inet", int80(359, 2, SOCK_STREAM, 0));
    report80("mseal", int80(462, 0, 0, 0));
    /* socket through the multiplexer: its arguments are in (32-bit) memory */
    unsigned int *args = mmap((void *)0x100000, 4096, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    args[0] = 40, args[1] = SOCK_STREAM, args[2] = 0;
    report80("socketcall_vsock", int80(102, 1, (long)args, 0));
    args[0] = 2;
    report80("socketcall_inet", int80(102, 1, (long)args, 0));
    report80("socketcall_socketpair", int80(102, 8, (long)args, 0));
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1 && strcmp(argv[1], "getppid") == 0) {
        syscall(SYS_getppid);
        printf("survived\n");
        return 0;
    }
    probe();
    return 0;
}
