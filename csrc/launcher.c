/* The launcher: a child of the init that installs the container's seccomp
 * filter once, then forks commands for the init.  Loading a filter costs
 * ~0.1 ms per command (the kernel verifies, JITs and emulates it for its
 * syscall cache); a command forked by the launcher inherits it instead.
 *
 * Used only where the filter allows all of the command set-up (the Python
 * side says so in the plan: Docker's default policy does), for commands
 * that set no_new_privs.  It forks with CLONE_PARENT, so every command is
 * still the init's child: the init reaps it and reports its exit exactly as
 * for a command it forked itself.
 *
 * A command with a cgroup of its own moves itself into it before it does
 * anything else (command.c), so the launcher needs no clone3 (which
 * Docker's policy refuses) and has the container's filter too. */
#include "launcher.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fdmsg.h"
#include "syscalls.h"

/* stdin, stdout, stderr, the report pipe, the reply socket (unless QUIET), cgroup.procs (if any) */
#define LAUNCH_FDS 6
#define STACK_SIZE (64 * 1024)

struct launch_reply {
    int32_t pid;
    int32_t err;
};

static char request[SBX_MAX_REQUEST];
static char *strings[SBX_MAX_REQUEST / 2];
static char stack[STACK_SIZE] __attribute__((aligned(16)));

struct start {
    struct sbx_command *cmd;
    int report_fd;
};

static int run_command(void *arg)
{
    struct start *s = arg;
    sbx_command_exec(s->cmd, s->report_fd);
}

static int install_filter(const void *filter, uint32_t len)
{
    struct sock_fprog prog = {.len = (unsigned short)(len / sizeof(struct sock_filter)),
                              .filter = (struct sock_filter *)filter};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -1;
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

/* Serve one request: fork the command (vfork-like: we sleep until it has
 * exec'd or failed), then answer its pid.  Returns -1 when the init is gone. */
static int serve(int sock, uint64_t bounding)
{
    int fds[LAUNCH_FDS], nfds, flags;
    ssize_t n = sbx_recv_with_fds(sock, request, sizeof(request), fds, LAUNCH_FDS, &nfds, &flags);
    if (n <= 0) {
        int retry = n < 0 && errno == EINTR;
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        return retry ? 0 : -1;
    }
    struct sbx_command cmd;
    struct launch_reply reply = {.pid = -1, .err = EBADMSG};
    int ok = !(flags & (MSG_TRUNC | MSG_CTRUNC)) &&
             sbx_command_parse(request, (size_t)n, strings, sizeof(strings) / sizeof(*strings), &cmd) == 0;
    int has_reply = ok && !(cmd.hdr->flags & SBX_EXEC_QUIET);
    int has_cgroup = ok && (cmd.hdr->flags & SBX_EXEC_CGROUP);
    if (ok && nfds == 4 + has_reply + has_cgroup) {
        memcpy(cmd.stdio, fds, sizeof(cmd.stdio));
        cmd.procs_fd = has_cgroup ? fds[nfds - 1] : -1;
        cmd.reply_fd = has_reply ? fds[4] : -1; /* the child announces its pid there */
        cmd.cap_bounding = bounding;
        cmd.filter = NULL; /* inherited */
        cmd.filter_len = 0;
        struct start s = {.cmd = &cmd, .report_fd = fds[3]};
        reply.pid = clone(run_command, stack + sizeof(stack), CLONE_VM | CLONE_VFORK | CLONE_PARENT, &s);
        reply.err = reply.pid < 0 ? errno : 0;
    }
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    return send(sock, &reply, sizeof(reply), MSG_NOSIGNAL) == (ssize_t)sizeof(reply) ? 0 : -1;
}

static __attribute__((noreturn)) void launcher_main(int sock, const struct sbx_plan *plan, uint64_t bounding)
{
    /* Nothing of the init's but this socket: not the control socket, not
     * the host's pidfd, not the reply sockets of running commands. */
    if (dup2(sock, 0) < 0 || sbx_close_range(1, ~0U, 0) < 0)
        _exit(1);
    prctl(PR_SET_NAME, "sbx-launcher", 0, 0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (getppid() != 1 || install_filter(plan->filter, plan->filter_len) < 0)
        _exit(1);
    /* The init's stop (SIGTERM) ends us too.  The rest stay blocked as the
     * init has them: we share the caller's process group, so a terminal's
     * ^C, ^\, ^Z and hang-up reach us (a command unblocks them again). */
    sigset_t all_but_term;
    sigfillset(&all_but_term);
    sigdelset(&all_but_term, SIGTERM);
    sigprocmask(SIG_SETMASK, &all_but_term, NULL);
    while (serve(0, bounding) == 0)
        ;
    _exit(0);
}

int sbx_launcher_start(const struct sbx_plan *plan, uint64_t bounding, pid_t *pid)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -1;
    pid_t child = fork();
    if (child == 0)
        launcher_main(sv[1], plan, bounding);
    close(sv[1]);
    /* At a fixed number: a low one would stay taken in the init's fd table. */
    int fd = child < 0 ? -1 : fcntl(sv[0], F_DUPFD_CLOEXEC, SBX_FD_LAUNCHER);
    close(sv[0]);
    if (fd < 0) {
        if (child > 0)
            kill(child, SIGKILL);
        return -1;
    }
    *pid = child;
    return fd;
}

pid_t sbx_launcher_fork(int fd, const void *req, size_t len, const int stdio[3], int reply_fd, int report_fd,
                        int procs_fd)
{
    int fds[LAUNCH_FDS] = {stdio[0], stdio[1], stdio[2], report_fd};
    size_t nfds = 4;
    if (reply_fd >= 0)
        fds[nfds++] = reply_fd;
    if (procs_fd >= 0)
        fds[nfds++] = procs_fd;
    union {
        char buf[CMSG_SPACE(sizeof(fds))];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof(u));
    struct iovec iov = {.iov_base = (void *)req, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = u.buf,
                         .msg_controllen = CMSG_SPACE(nfds * sizeof(int))};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
    struct launch_reply reply;
    ssize_t n;
    if (sendmsg(fd, &msg, MSG_NOSIGNAL) != (ssize_t)len)
        return SBX_LAUNCHER_GONE;
    do {
        n = recv(fd, &reply, sizeof(reply), 0);
    } while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof(reply))
        return SBX_LAUNCHER_GONE;
    if (reply.pid < 0)
        errno = reply.err;
    return reply.pid;
}
