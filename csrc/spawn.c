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

#include "clone.h"
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

/* In the clone child, first: join the container's cgroup v1 hierarchies by
 * writing "0" to their "tasks" files (a single thread moving itself skips
 * the kernel's global threadgroup lock: ~0.03 ms, where the parent writing
 * our pid to cgroup.procs took 7-20 ms), then a cgroup namespace rooted
 * there.  Before any thread or child of ours exists, so all follow. */
static void join_cgroups(const struct sbx_spawn_args *a, int err_fd)
{
    if (a->fault_errno && a->fault_step == SBX_STEP_CGROUP)
        sbx_report_fail(err_fd, SBX_STEP_CGROUP, a->fault_errno, -1);
    for (int i = 0; i < a->n_attach; i++)
        if (write(a->attach_fds[i], "0", 1) != 1)
            sbx_report_fail(err_fd, SBX_STEP_CGROUP, errno, i);
    if (a->new_cgroupns && unshare(CLONE_NEWCGROUP) < 0)
        sbx_report_fail(err_fd, SBX_STEP_CGROUP, errno, -1);
}

/* In the clone child: fds into place (0-2, 3, 4, 5), everything else
 * close-on-exec, exec sbx-init.  Failures go to the error pipe. */
static int spawn_child(void *arg)
{
    const struct sbx_spawn_args *a = arg;
    int high[5], err_fd = a->fds[3];
    join_cgroups(a, err_fd);
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
    if (a->fault_errno && a->fault_step == SBX_STEP_INIT_EXEC)
        sbx_report_fail(SBX_FD_ERROR, SBX_STEP_INIT_EXEC, a->fault_errno, -1);
    keep_caps_across_exec(a->caps);
    sbx_execveat(high[4], "", a->argv, a->envp, AT_EMPTY_PATH);
    sbx_report_fail(SBX_FD_ERROR, SBX_STEP_INIT_EXEC, errno, -1);
}

/* clone3(CLONE_INTO_CGROUP): the child starts in the container's cgroup v2
 * directory at no extra cost.  Returns the pid or -errno. */
static int clone_into_cgroup(struct sbx_spawn_args *args, void *stack, int *pidfd)
{
    struct clone_args ca = {
        .flags = args->clone_flags | CLONE_VM | CLONE_VFORK | CLONE_PIDFD | CLONE_INTO_CGROUP,
        .pidfd = (uint64_t)(uintptr_t)pidfd,
        .exit_signal = 0,
        .stack = (uint64_t)(uintptr_t)stack,
        .stack_size = CHILD_STACK,
        .cgroup = (uint64_t)args->cgroup_fd,
    };
    return (int)sbx_clone3_run(&ca, spawn_child, args);
}

int sbx_spawn(const struct sbx_spawn_args *args, int *pidfd_out)
{
    void *stack =
        mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED)
        return -errno;
    struct sbx_spawn_args a = *args;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int pidfd = -1, pid = -ENOSYS, procs = -1, own_pidns = -1;
    /* A pid namespace to start in: this thread's namespace for children, for
     * the clone only (a clone's pid namespace cannot be changed after). */
    if (a.pidns_fd >= 0) {
        own_pidns = open("/proc/thread-self/ns/pid", O_RDONLY | O_CLOEXEC);
        if (own_pidns < 0 || setns(a.pidns_fd, CLONE_NEWPID) < 0) {
            pid = -errno;
            if (own_pidns >= 0)
                close(own_pidns);
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            munmap(stack, CHILD_STACK);
            return pid;
        }
    }
    if (a.cgroup_fd >= 0)
        pid = clone_into_cgroup(&a, stack, &pidfd);
    if (pid == -ENOSYS) {
        /* No clone3 (before Linux 5.7): the child writes itself into the
         * v2 cgroup's cgroup.procs, the slow way (the global lock). */
        if (a.cgroup_fd >= 0 && a.n_attach < SBX_MAX_ATTACH_FDS &&
            (procs = openat(a.cgroup_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC)) >= 0)
            a.attach_fds[a.n_attach++] = procs;
        /* exit signal 0: nobody's waitpid(-1) may reap our child. */
        int flags = (int)a.clone_flags | CLONE_VM | CLONE_VFORK | CLONE_PIDFD;
        pid = clone(spawn_child, (char *)stack + CHILD_STACK, flags, (void *)&a, &pidfd);
        pid = pid < 0 ? -errno : pid;
        if (procs >= 0)
            close(procs);
    }
    if (own_pidns >= 0) { /* back to our own (an ancestor: always allowed) */
        setns(own_pidns, CLONE_NEWPID);
        close(own_pidns);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    munmap(stack, CHILD_STACK);
    if (pid < 0)
        return pid;
    *pidfd_out = pidfd;
    return pid;
}
