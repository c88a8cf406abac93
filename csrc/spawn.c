/* Parent side of a spawn: clone3() with the plan's namespaces and a pidfd.
 * Signals are blocked around the clone so that no handler of the host
 * process (CPython's included) can run in the child before execve. */
#include "spawn.h"

#include <errno.h>
#include <signal.h>
#include <string.h>

#include "child.h"
#include "syscalls.h"

int sbx_spawn(const struct sbx_plan *plan, int *pidfd_out)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int pidfd = -1;
    struct clone_args args;
    memset(&args, 0, sizeof(args));
    args.flags = plan->clone_flags | CLONE_PIDFD;
    args.pidfd = (uint64_t)(uintptr_t)&pidfd;
    args.exit_signal = 0;  /* nobody's waitpid(-1) may reap our child */
    long pid = sbx_clone3(&args);
    if (pid == 0)
        sbx_child_main(plan);
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0)
        return -saved;
    *pidfd_out = pidfd;
    return (int)pid;
}
