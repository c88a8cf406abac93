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
 * Commands with a cgroup of their own (SBX_PLAN_CGROUP_LAUNCHER) have a
 * launcher of their own: clone3(CLONE_INTO_CGROUP), which Docker's policy
 * refuses, so that launcher installs the policy with clone3 allowed
 * (plan->launcher_filter) and each of its commands adds a small filter that
 * answers clone3 as the policy does (plan->clone3_filter): the two together
 * are the container's filter.  The small one costs a command ~0.04 ms to
 * load, the whole policy ~0.25 ms.
 *
 * A forker is a launcher born in one command cgroup (clone3 once) with the
 * container's whole filter: it forks the commands of that cgroup with plain
 * vfork, so a kept cgroup's next commands pay neither clone3 into it nor
 * the small filter (init.c keeps them, one per kept cgroup).  It ends by
 * itself after FORKER_IDLE_MS without a request. */
#include "launcher.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/sockios.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clone.h"
#include "fdmsg.h"
#include "syscalls.h"

/* stdin, stdout, stderr, the report pipe, the reply socket (unless QUIET), the cgroup (if any) */
#define LAUNCH_FDS 6
#define STACK_SIZE (64 * 1024)
#define FORKER_IDLE_MS 10000
#define STOPPED_CHECK_MS 100

struct launch_reply {
    int32_t pid;
    int32_t err;
};

static char request[SBX_MAX_REQUEST];
static char *strings[SBX_MAX_REQUEST / 2];
static char stack[STACK_SIZE] __attribute__((aligned(16)));
/* A forker runs on this one (in its own copy of the init's memory) and
 * forks its commands on `stack`. */
static char forker_stack[STACK_SIZE] __attribute__((aligned(16)));

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

/* clone3(CLONE_VM | CLONE_VFORK | CLONE_PARENT | CLONE_INTO_CGROUP): the pid or -1 with errno. */
static pid_t clone_into(int cgroup_fd, struct start *s)
{
    struct clone_args ca = {
        .flags = CLONE_VM | CLONE_VFORK | CLONE_PARENT | CLONE_INTO_CGROUP,
        .exit_signal = 0, /* (CLONE_PARENT: the init's own exit signal for its children) */
        .stack = (uint64_t)(uintptr_t)stack,
        .stack_size = sizeof(stack),
        .cgroup = (uint64_t)cgroup_fd,
    };
    long pid = sbx_clone3_run(&ca, run_command, s);
    if (pid < 0) {
        errno = (int)-pid;
        return -1;
    }
    return (pid_t)pid;
}

/* Serve one request: fork the command (vfork-like: we sleep until it has
 * exec'd or failed), then answer its pid.  Returns -1 when the init is gone.
 * A forker (`forker`) forks every command where it is: their requests say
 * SBX_EXEC_CGROUP but carry no cgroup. */
static int serve(int sock, uint64_t bounding, const struct sbx_plan *plan, int forker)
{
    int fds[LAUNCH_FDS], nfds, flags;
    ssize_t n = sbx_recv_with_fds(sock, request, sizeof(request), fds, LAUNCH_FDS, &nfds, &flags);
    if (n < 0 && errno == EAGAIN && forker) {
        /* Idle for FORKER_IDLE_MS (SO_RCVTIMEO): shut the reading side, so
         * that a request sent after it fails to send (the init forks it
         * otherwise), and serve one sent before it; then recv says EOF.  A
         * request that was sent is never lost to an idle end. */
        shutdown(sock, SHUT_RD);
        return 0;
    }
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
    int has_cgroup = ok && !forker && (cmd.hdr->flags & SBX_EXEC_CGROUP);
    if (ok && nfds == 4 + has_reply + has_cgroup) {
        memcpy(cmd.stdio, fds, sizeof(cmd.stdio));
        cmd.cgroup_fd = has_cgroup ? fds[nfds - 1] : -1;
        cmd.reply_fd = has_reply ? fds[4] : -1; /* the child announces its pid there */
        cmd.cap_bounding = bounding;
        cmd.filter = has_cgroup ? plan->clone3_filter : NULL; /* the rest is inherited */
        cmd.filter_len = has_cgroup ? plan->clone3_filter_len : 0;
        struct start s = {.cmd = &cmd, .report_fd = fds[3]};
        reply.pid =
            has_cgroup ? clone_into(cmd.cgroup_fd, &s)
                       : clone(run_command, stack + sizeof(stack), CLONE_VM | CLONE_VFORK | CLONE_PARENT, &s);
        reply.err = reply.pid < 0 ? errno : 0;
    }
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    return send(sock, &reply, sizeof(reply), MSG_NOSIGNAL) == (ssize_t)sizeof(reply) ? 0 : -1;
}

static __attribute__((noreturn)) void launcher_main(int sock, const struct sbx_plan *plan, uint64_t bounding,
                                                    int cgroups, int forker)
{
    /* Nothing of the init's but this socket: not the control socket, not
     * the host's pidfd, not the reply sockets of running commands. */
    if (dup2(sock, 0) < 0 || sbx_close_range(1, ~0U, 0) < 0)
        _exit(1);
    prctl(PR_SET_NAME, forker ? "sbx-forker" : "sbx-launcher", 0, 0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    int own = cgroups && plan->launcher_filter_len; /* (none: the container's allows clone3) */
    if (getppid() != 1 || install_filter(own ? plan->launcher_filter : plan->filter,
                                         own ? plan->launcher_filter_len : plan->filter_len) < 0)
        _exit(1);
    /* The init's stop (SIGTERM) ends us too.  The rest stay blocked as the
     * init has them: we share the caller's process group, so a terminal's
     * ^C, ^\, ^Z and hang-up reach us (a command unblocks them again). */
    sigset_t all_but_term;
    sigfillset(&all_but_term);
    sigdelset(&all_but_term, SIGTERM);
    sigprocmask(SIG_SETMASK, &all_but_term, NULL);
    struct timeval idle = {.tv_sec = FORKER_IDLE_MS / 1000};
    if (forker && setsockopt(0, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof(idle)) < 0)
        _exit(1);
    struct launch_reply serving = {.pid = 0};
    if (send(0, &serving, sizeof(serving), MSG_NOSIGNAL) != (ssize_t)sizeof(serving))
        _exit(1);
    while (serve(0, bounding, plan, forker) == 0)
        ;
    _exit(0);
}

struct forker_args {
    int sock;
    const struct sbx_plan *plan;
    uint64_t bounding;
};

static int forker_child(void *arg)
{
    struct forker_args *a = arg;
    launcher_main(a->sock, a->plan, a->bounding, 0, 1);
}

/* fork(), or for a forker clone3(CLONE_INTO_CGROUP) as a fork (its own copy
 * of our memory). */
static pid_t start_child(const struct sbx_plan *plan, uint64_t bounding, int cgroups, int cgroup_fd, int sock)
{
    if (cgroup_fd < 0) {
        pid_t child = fork();
        if (child == 0)
            launcher_main(sock, plan, bounding, cgroups, 0);
        return child;
    }
    struct forker_args a = {.sock = sock, .plan = plan, .bounding = bounding};
    struct clone_args ca = {.flags = CLONE_INTO_CGROUP,
                            .exit_signal = SIGCHLD,
                            .stack = (uint64_t)(uintptr_t)forker_stack,
                            .stack_size = sizeof(forker_stack),
                            .cgroup = (uint64_t)cgroup_fd};
    long pid = sbx_clone3_run(&ca, forker_child, &a);
    if (pid < 0) {
        errno = (int)-pid;
        return -1;
    }
    return (pid_t)pid;
}

int sbx_launcher_start(const struct sbx_plan *plan, uint64_t bounding, int cgroups, int cgroup_fd, pid_t *pid)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return -1;
    pid_t child = start_child(plan, bounding, cgroups, cgroup_fd, sv[1]);
    close(sv[1]);
    /* At a fixed number: a low one would stay taken in the init's fd table
     * (forkers' above the launchers'). */
    int fd = child < 0 ? -1 : fcntl(sv[0], F_DUPFD_CLOEXEC, SBX_FD_LAUNCHER + (cgroup_fd >= 0 ? 2 : cgroups));
    close(sv[0]);
    struct timeval check = {.tv_usec = STOPPED_CHECK_MS * 1000}; /* (launcher_message) */
    if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &check, sizeof(check)) < 0) {
        close(fd);
        fd = -1;
    }
    if (fd < 0) {
        if (child > 0)
            kill(child, SIGKILL);
        return -1;
    }
    *pid = child;
    return fd;
}

/* A launcher the container's root stopped (SIGSTOP, kill -STOP -1) would
 * hold the init, and so the whole container, until continued: while the
 * init waits for its word (every STOPPED_CHECK_MS), it looks whether it is
 * stopped (their parent: waitid sees their stops) and kills it.  Returns
 * recv's result, an EOF once it died; *untaken: it was stopped and killed
 * with our last message still unread (SIOCOUTQ: what the peer has not
 * read), so that request may be forked another way. */
static ssize_t launcher_message(int fd, pid_t pid, struct launch_reply *message, int *untaken)
{
    for (;;) {
        ssize_t n = recv(fd, message, sizeof(*message), 0); /* (SO_RCVTIMEO: STOPPED_CHECK_MS) */
        if (n >= 0 || (errno != EINTR && errno != EAGAIN))
            return n;
        siginfo_t info = {.si_pid = 0};
        if (errno == EINTR || waitid(P_PID, (id_t)pid, &info, WSTOPPED | WNOHANG | WNOWAIT) < 0 ||
            info.si_pid != pid)
            continue;
        int unread = 0;
        *untaken = ioctl(fd, SIOCOUTQ, &unread) == 0 && unread > 0; /* (before the kill frees it) */
        kill(pid, SIGKILL);
    }
}

pid_t sbx_launcher_fork(int fd, pid_t pid, int *serving, const void *req, size_t len, const int stdio[3],
                        int reply_fd, int report_fd, int cgroup_fd)
{
    struct launch_reply reply;
    int untaken = 0;
    if (!*serving && !(*serving = launcher_message(fd, pid, &reply, &untaken) == (ssize_t)sizeof(reply)))
        return SBX_LAUNCHER_GONE;
    int fds[LAUNCH_FDS] = {stdio[0], stdio[1], stdio[2], report_fd};
    size_t nfds = 4;
    if (reply_fd >= 0)
        fds[nfds++] = reply_fd;
    if (cgroup_fd >= 0)
        fds[nfds++] = cgroup_fd;
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
    if (sendmsg(fd, &msg, MSG_NOSIGNAL) != (ssize_t)len)
        return SBX_LAUNCHER_GONE;
    if (launcher_message(fd, pid, &reply, &untaken) != (ssize_t)sizeof(reply))
        return untaken ? SBX_LAUNCHER_GONE : SBX_LAUNCHER_LOST; /* (LOST: it may have forked the command) */
    if (reply.pid < 0)
        errno = reply.err;
    return reply.pid;
}
