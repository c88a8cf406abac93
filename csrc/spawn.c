/* Parent side of a spawn, in the Python extension.
 *
 * clone(CLONE_VM | CLONE_VFORK) with the container's namespaces: the child
 * shares the host process's memory for the few microseconds until it
 * execs sbx-init (no page tables copied, no copy-on-write faults in the
 * host process afterwards), and the caller's thread sleeps until then.
 * The child only places fds and execs; all set-up happens in sbx-init.
 * Signals are blocked around the clone so that no handler of the host
 * process (CPython's included) can run in the child. */
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "report.h"
#include "syscalls.h"

#define CHILD_STACK (64 * 1024)

/* The child is not yet root of its user namespace when it execs (the
 * parent writes the id maps afterwards), so execve would clear its
 * capabilities: carry the ones in mask over as ambient capabilities (what
 * sbx-init needs, and what its commands get: with no_new_privs, a
 * command's exec can keep but never gain a capability).  Best effort;
 * sbx-init's set-up reports what it then cannot do. */
static void keep_caps_across_exec(uint64_t mask)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &hdr, data) < 0)
        return;
    data[0].inheritable = data[0].permitted;
    data[1].inheritable = data[1].permitted;
    if (syscall(SYS_capset, &hdr, data) < 0)
        return;
    for (int cap = 0; cap < 64; cap++)
        if (mask & (1ULL << cap))
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0);
}

/* In the clone child: fds into place (0-2, 3, 4, 5), everything else
 * close-on-exec, exec sbx-init.  Failures go to the error pipe. */
static int spawn_child(void *arg)
{
    const struct sbx_spawn_args *a = arg;
    int high[5], err_fd = a->fds[3];
    for (int i = 0; i < 4; i++)
        high[i] = sbx_fd_high(a->fds[i]);
    high[4] = sbx_fd_high(a->init_fd);
    for (int i = 0; i < 5; i++)
        if (high[i] < 0)
            sbx_report_fail(err_fd, SBX_STEP_INIT_EXEC, -high[i], -1);
    if (dup2(high[0], 0) < 0 || dup2(high[0], 1) < 0 || dup2(high[0], 2) < 0 ||
        dup2(high[1], SBX_FD_CONTROL) < 0 || dup2(high[2], SBX_FD_PARENT) < 0 ||
        dup2(high[3], SBX_FD_ERROR) < 0)
        sbx_report_fail(err_fd, SBX_STEP_INIT_EXEC, errno, -1);
    if (sbx_close_range(SBX_FD_ERROR + 1, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        sbx_report_fail(err_fd, SBX_STEP_INIT_EXEC, errno, -1);
    if (a->fault_errno)
        sbx_report_fail(SBX_FD_ERROR, SBX_STEP_INIT_EXEC, a->fault_errno, -1);
    keep_caps_across_exec(a->caps);
    sbx_execveat(high[4], "", a->argv, a->envp, AT_EMPTY_PATH);
    sbx_report_fail(SBX_FD_ERROR, SBX_STEP_INIT_EXEC, errno, -1);
}

int sbx_spawn(const struct sbx_spawn_args *args, int *pidfd_out)
{
    void *stack = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED)
        return -errno;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int pidfd = -1;
    /* exit signal 0: nobody's waitpid(-1) may reap our child. */
    int flags = (int)args->clone_flags | CLONE_VM | CLONE_VFORK | CLONE_PIDFD;
    int pid = clone(spawn_child, (char *)stack + CHILD_STACK, flags, (void *)args, &pidfd);
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    munmap(stack, CHILD_STACK);
    if (pid < 0)
        return -saved;
    *pidfd_out = pidfd;
    return pid;
}
