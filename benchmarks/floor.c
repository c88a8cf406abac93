/* The kernel's floor for a sandboxed /bin/true, for bench_spawn.py: clone
 * into the namespaces sb.run makes (user, pid, mount, uts, ipc, network,
 * cgroup), execve /bin/true, reap it.  No mounts, no id maps, no init, no
 * Python: what any tool with the same isolation pays at the least.
 * Built by the benchmark as a shared library and called through ctypes. */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static char stack[64 * 1024] __attribute__((aligned(16)));

static int child(void *arg)
{
    char *argv[] = {"/bin/true", NULL};
    (void)arg;
    execve(argv[0], argv, NULL);
    _exit(127);
}

/* Returns the exit status of /bin/true, or -1. */
int floor_run(int with_namespaces)
{
    int ns = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET |
             CLONE_NEWCGROUP;
    int status;
    pid_t pid = clone(child, stack + sizeof(stack), CLONE_VM | CLONE_VFORK | SIGCHLD | (with_namespaces ? ns : 0),
                      NULL);
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    return status;
}
