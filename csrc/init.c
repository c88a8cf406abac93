/* sbx-init: PID 1 of every container.  A separate static executable that
 * the spawn child execveat()s from a sealed memfd right after clone, so
 * the container holds no copy of the host's Python process.  It first sets
 * the container up (setup.c), then serves as its init.
 *
 * fd 3: the control socket (SOCK_SEQPACKET) to the host process.
 * fd 4: a pidfd of the host process (SBX_PLAN_DETACHED: a listening socket
 *       whose connections become the control socket, one at a time).
 * fd 5: the set-up error pipe, closed once the container is set up.
 *
 * It starts commands on request (fork + sbx_command_exec), reports their
 * start, failure and exit on each request's own reply socket, reaps every
 * zombie, forwards signals, and ends the container - killing everything
 * in it - when the main command ends, on STOP, or when the host process
 * goes away (closes the control socket or exits). */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "clone.h"
#include "command.h"
#include "fdmsg.h"
#include "launcher.h"
#include "report.h"
#include "setup.h"
#include "syscalls.h"

#define CONTROL_FD SBX_FD_CONTROL
#define PARENT_FD SBX_FD_PARENT
#define MAX_CHILDREN 4096
#define MAX_STRINGS (SBX_MAX_REQUEST / 2)
#define MAX_FDS 5 /* reply socket, stdin, stdout, stderr, cgroup */
#define CHILD_STACK (64 * 1024)

struct child {
    pid_t pid;
    uint32_t id;
    int reply_fd;
    int main;
    int cgroup_fd; /* its own cgroup (a copy of the request's fd), or -1 ... */
    struct forker *forker; /* ... or the forker that forked it, there */
    pid_t forker_pid; /* (that forker's, while it has not ended) */
};

static struct child children[MAX_CHILDREN];
static char request[SBX_MAX_REQUEST];
static char *strings[MAX_STRINGS];
static char child_stack[CHILD_STACK] __attribute__((aligned(16)));
static int stopping;
static int bounding_set; /* the bounding set was dropped to ... */
static uint64_t bounding_keep; /* ... this mask (the container's) */
static const struct sbx_plan *plan; /* its seccomp filter goes into every command */
/* The launchers (launcher.c): [0] forks commands in the container's cgroup,
 * [1] commands with a cgroup of their own (SBX_PLAN_CGROUP_LAUNCHER). */
static struct launcher {
    int fd; /* our end of its socket, or -1 */
    pid_t pid;
    int off; /* it could not start or died: fork those commands ourselves */
    int serving; /* it said so (sbx_launcher_fork) */
} launchers[2] = {{.fd = -1}, {.fd = -1}};
/* Forkers (launcher.c): a launcher resident in a command cgroup the host
 * keeps for reuse, started in one found empty at its command's exit, at
 * most plan->max_forkers.  Each is a process in the container's pids and
 * memory accounting (~0.1 MB); it ends by itself when idle. */
#define MAX_FORKERS 64
static struct forker {
    pid_t pid; /* 0: a free slot */
    int fd; /* our end of its socket */
    int serving; /* it said so (sbx_launcher_fork) */
    dev_t dev; /* its cgroup directory's; ino 0: retired (killed, not reaped yet) */
    ino_t ino;
    int cgroup_fd; /* that directory, and its cgroup.procs: checked at each of its */
    int procs_fd; /* commands' exits without an open and a close */
} forkers[MAX_FORKERS];
/* SBX_EXEC_HOLD: the main command's request and stdio, kept until START. */
static char held[SBX_MAX_REQUEST];
static size_t held_len;
static int held_stdio[3] = {-1, -1, -1};

static struct child *find_child(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i].pid == pid && pid > 0)
            return &children[i];
    return NULL;
}

static struct child *find_by_id(uint32_t id)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i].pid > 0 && children[i].id == id)
            return &children[i];
    return NULL;
}

/* Send a reply.  The host learns a command's own pid (translated into its
 * pid namespace) from the PID message the command's child sends first
 * (command.c: announce_pid), not from us: naming another process's pid in
 * SCM_CREDENTIALS would need CAP_SYS_ADMIN. */
static void send_reply(int fd, const struct sbx_reply *r)
{
    while (send(fd, r, sizeof(*r), MSG_NOSIGNAL) < 0 && errno == EINTR)
        ;
}

static void reply_failed(int fd, int step, int err, int index)
{
    struct sbx_reply r = {.type = SBX_REPLY_FAILED, .report = {step, err, index}};
    send_reply(fd, &r);
}

static int shared_pidns; /* not PID 1: a pid namespace joined by path, others' too */

/* Signal every process of the container: as PID 1 of its own pid namespace,
 * all of it; in a joined one never kill(-1), which would reach every
 * process there, but our commands and their process groups. */
static void signal_all(int sig)
{
    if (!shared_pidns) {
        kill(-1, sig);
        return;
    }
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i].pid > 0) {
            kill(-children[i].pid, sig); /* each command is a session (and group) leader */
            kill(children[i].pid, sig);
        }
    for (int i = 0; i < 2; i++)
        if (launchers[i].pid > 0)
            kill(launchers[i].pid, sig);
    for (int i = 0; i < MAX_FORKERS; i++)
        if (forkers[i].pid > 0)
            kill(forkers[i].pid, sig);
}

/* Reap everything signal_all(SIGKILL) ended.  In a joined pid namespace a
 * process that left its group may live on (we are its subreaper): wait
 * for the rest at most a second; the runtime's delete kills the cgroup. */
static void reap_all(void)
{
    if (!shared_pidns) {
        while (waitpid(-1, NULL, __WALL) > 0 || errno == EINTR)
            ;
        return;
    }
    for (int tries = 0; tries < 100; tries++) {
        pid_t pid;
        while ((pid = waitpid(-1, NULL, WNOHANG | __WALL)) > 0)
            ;
        if (pid < 0 && errno == ECHILD)
            return;
        usleep(10000);
    }
}

/* Kill every other process in the container and reap them all. */
static __attribute__((noreturn)) void end_container(void)
{
    signal_all(SIGKILL);
    reap_all();
    _exit(0);
}

struct command_start {
    struct sbx_command *cmd;
    int report_fd;
};

static int command_child(void *arg)
{
    struct command_start *s = arg;
    sbx_command_exec(s->cmd, s->report_fd);
}

/* vfork, or with a command cgroup clone3(CLONE_VM | CLONE_VFORK |
 * CLONE_INTO_CGROUP): the command and everything it starts, setsid or
 * not, are in that cgroup from the first instruction, so the host can
 * kill them all with cgroup.kill.  Both share our memory only until the
 * child execs (we sleep meanwhile), so one static stack does.  Returns the
 * pid or -1 with errno. */
static void forget_launcher(struct launcher *l)
{
    if (l->fd >= 0)
        close(l->fd);
    if (l->pid > 0)
        kill(l->pid, SIGKILL); /* reaped as any other zombie */
    l->fd = -1;
    l->pid = 0;
    l->off = 1;
}

/* The launcher that forks this command (started by the first that may), or
 * NULL: not for the main command (a one-shot run would gain nothing), only
 * when it sets no_new_privs, as the launcher did, and for a command with a
 * cgroup of its own only when the plan has that launcher's filters. */
static struct launcher *launcher_for(const struct sbx_command *cmd)
{
    int cgroup = cmd->cgroup_fd >= 0;
    struct launcher *l = &launchers[cgroup];
    if (l->off || !(plan->flags & SBX_PLAN_LAUNCHER) ||
        (cgroup && !(plan->flags & SBX_PLAN_CGROUP_LAUNCHER)) ||
        (cmd->hdr->flags & (SBX_EXEC_MAIN | SBX_EXEC_NO_NEW_PRIVS)) != SBX_EXEC_NO_NEW_PRIVS)
        return NULL;
    if (l->fd < 0) {
        l->fd = sbx_launcher_start(plan, cmd->cap_bounding, cgroup, -1, &l->pid);
        l->off = l->fd < 0;
    }
    return l->fd >= 0 ? l : NULL;
}

static struct forker *find_forker(const struct stat *cgroup)
{
    for (int i = 0; i < MAX_FORKERS; i++)
        if (forkers[i].pid > 0 && forkers[i].ino == cgroup->st_ino && forkers[i].dev == cgroup->st_dev)
            return &forkers[i];
    return NULL;
}

static void close_forker_fds(struct forker *f)
{
    int *fds[3] = {&f->fd, &f->cgroup_fd, &f->procs_fd};
    for (int i = 0; i < 3; i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
}

/* (its cgroup's fds stay until it is reaped: forker_ended) */
static void retire_forker(struct forker *f)
{
    kill(f->pid, SIGKILL); /* reaped as any other zombie */
    close(f->fd);
    f->fd = -1;
    f->ino = 0;
}

/* A forker was reaped: a command it forked that still runs (it may outlive
 * the forker's idle while) takes its cgroup's fd, for the check at its exit. */
static void forker_ended(struct forker *f)
{
    for (int i = 0; f->cgroup_fd >= 0 && i < MAX_CHILDREN; i++)
        if (children[i].pid > 0 && children[i].forker == f && children[i].forker_pid == f->pid) {
            children[i].cgroup_fd = f->cgroup_fd;
            children[i].forker = NULL;
            f->cgroup_fd = -1;
        }
    close_forker_fds(f);
    *f = (struct forker){.fd = -1, .cgroup_fd = -1, .procs_fd = -1};
}

/* Fork through the forker of the command's cgroup, if it has one and may
 * (as launcher_for): the pid, -1 with errno, SBX_LAUNCHER_GONE or _LOST. */
static pid_t fork_by_forker(struct sbx_command *cmd, int report_fd, size_t len, struct forker **by)
{
    struct stat st;
    if (!(plan->flags & SBX_PLAN_LAUNCHER) ||
        (cmd->hdr->flags & (SBX_EXEC_MAIN | SBX_EXEC_NO_NEW_PRIVS)) != SBX_EXEC_NO_NEW_PRIVS ||
        fstat(cmd->cgroup_fd, &st) < 0)
        return SBX_LAUNCHER_GONE;
    struct forker *f = find_forker(&st);
    if (!f)
        return SBX_LAUNCHER_GONE;
    pid_t pid =
        sbx_launcher_fork(f->fd, f->pid, &f->serving, request, len, cmd->stdio, cmd->reply_fd, report_fd, -1);
    if (pid == SBX_LAUNCHER_GONE || pid == SBX_LAUNCHER_LOST)
        retire_forker(f); /* it ended (idle, or killed): GONE, the launcher forks this one */
    else if (pid >= 0)
        *by = f;
    return pid;
}

/* A launcher or forker died with the request: the command may have been
 * forked (and may run, unknown to us), so it fails rather than run twice;
 * the FAILED reply says its cgroup, if any, is not ready (fail_start), and
 * the host kills what is there. */
static pid_t lost_command(void)
{
    errno = EINTR;
    return -1;
}

/* *by: the forker that forked it, if one did. */
static pid_t fork_command(struct sbx_command *cmd, int report_fd, size_t len, struct forker **by)
{
    if (cmd->cgroup_fd >= 0) {
        pid_t pid = fork_by_forker(cmd, report_fd, len, by);
        if (pid == SBX_LAUNCHER_LOST)
            return lost_command();
        if (pid != SBX_LAUNCHER_GONE)
            return pid;
    }
    struct launcher *l = launcher_for(cmd);
    if (l) {
        pid_t pid = sbx_launcher_fork(l->fd, l->pid, &l->serving, request, len, cmd->stdio, cmd->reply_fd,
                                      report_fd, cmd->cgroup_fd);
        if (pid >= 0 || (pid == -1 && errno != ENOSYS))
            return pid;
        forget_launcher(l); /* gone, or no clone3 (before Linux 5.7): we fork them */
        if (pid == SBX_LAUNCHER_LOST)
            return lost_command();
    }
    if (cmd->cgroup_fd < 0) {
        pid_t pid = vfork();
        if (pid == 0)
            sbx_command_exec(cmd, report_fd);
        return pid;
    }
    struct command_start start = {.cmd = cmd, .report_fd = report_fd};
    struct clone_args ca = {
        .flags = CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP,
        .exit_signal = SIGCHLD,
        .stack = (uint64_t)(uintptr_t)child_stack,
        .stack_size = sizeof(child_stack),
        .cgroup = (uint64_t)cmd->cgroup_fd,
    };
    long pid = sbx_clone3_run(&ca, command_child, &start);
    if (pid == -ENOSYS) {
        /* No clone3 (before Linux 5.7): the child moves itself, the slow way. */
        pid_t child = vfork();
        if (child == 0) {
            int procs = openat(cmd->cgroup_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
            if (procs < 0 || write(procs, "0", 1) != 1)
                sbx_report_fail(report_fd, SBX_STEP_FORK, errno, -1);
            close(procs);
            sbx_command_exec(cmd, report_fd);
        }
        return child;
    }
    if (pid < 0) {
        errno = (int)-pid;
        return -1;
    }
    return (pid_t)pid;
}

static int cgroup_ready(int cgroup_fd, int *fresh);

/* A command that did not start: FAILED, saying whether its own cgroup (if
 * any) may serve the next command, as at an exit (a failed child is reaped
 * by now; without the flag the host kills what is there). */
static void fail_start(const struct sbx_command *cmd, int reply_fd, int step, int err, int index)
{
    struct sbx_reply r = {.type = SBX_REPLY_FAILED, .report = {step, err, index}};
    int fresh;
    if (cmd->cgroup_fd >= 0 && cgroup_ready(cmd->cgroup_fd, &fresh))
        r.flags = SBX_REPLY_CGROUP_READY;
    send_reply(reply_fd, &r);
}

/* Fork and exec one command; reply STARTED or FAILED (after the child's own
 * PID message, unless QUIET).  Returns 1 when the child runs and keeps
 * reply_fd, else 0. */
static int start_command(struct sbx_command *cmd, int reply_fd, size_t len)
{
    struct child *slot = NULL;
    for (int i = 0; !slot && i < MAX_CHILDREN; i++)
        if (children[i].pid == 0)
            slot = &children[i];
    int pipefd[2];
    if (!slot) {
        fail_start(cmd, reply_fd, SBX_STEP_FORK, EAGAIN, -1);
        return 0;
    }
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        fail_start(cmd, reply_fd, SBX_STEP_FORK, errno, -1);
        return 0;
    }
    if (!bounding_set && sbx_drop_bounding(cmd->hdr->cap_keep) == 0) {
        bounding_set = 1; /* once: every command inherits it */
        bounding_keep = cmd->hdr->cap_keep;
    }
    cmd->cap_bounding = bounding_set ? bounding_keep : ~0ULL;
    cmd->filter = plan->filter;
    cmd->filter_len = plan->filter_len;
    cmd->reply_fd = (cmd->hdr->flags & SBX_EXEC_QUIET) ? -1 : reply_fd;
    uint32_t fault = cmd->hdr->fault;
    /* vfork: the init is small, but copying nothing is faster still; it
     * sleeps until the command has exec'd or reported its failure. */
    struct forker *by = NULL;
    pid_t pid = (fault && (fault & 0xffff) == SBX_STEP_FORK) ? (errno = (int)(fault >> 16), -1)
                                                             : fork_command(cmd, pipefd[1], len, &by);
    int fork_err = errno;
    close(pipefd[1]);
    if (pid < 0) {
        close(pipefd[0]);
        fail_start(cmd, reply_fd, SBX_STEP_FORK, fork_err, -1);
        return 0;
    }
    struct sbx_report rep;
    ssize_t n;
    do {
        n = read(pipefd[0], &rep, sizeof(rep));
    } while (n < 0 && errno == EINTR);
    close(pipefd[0]);
    if (n == (ssize_t)sizeof(rep)) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        fail_start(cmd, reply_fd, rep.step, rep.err, rep.index);
        return 0;
    }
    slot->pid = pid;
    slot->id = cmd->hdr->id;
    slot->reply_fd = reply_fd;
    slot->main = (cmd->hdr->flags & SBX_EXEC_MAIN) != 0;
    slot->forker = by;
    slot->forker_pid = by ? by->pid : 0;
    /* (high, as the launchers': fd 3 may be free for the next control socket) */
    slot->cgroup_fd = cmd->cgroup_fd < 0 || by ? -1 : fcntl(cmd->cgroup_fd, F_DUPFD_CLOEXEC, SBX_FD_LAUNCHER);
    if (cmd->hdr->flags & SBX_EXEC_QUIET)
        return 1;
    struct sbx_reply r = {.type = SBX_REPLY_STARTED, .pid = pid};
    send_reply(reply_fd, &r);
    return 1;
}

#ifndef TIOCGPTPEER
#define TIOCGPTPEER _IO('T', 0x41)
#endif

/* Send the TTY reply: the terminal's master travels as SCM_RIGHTS. */
static int send_master(int reply_fd, int master)
{
    struct sbx_reply r = {.type = SBX_REPLY_TTY};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof(u));
    struct iovec iov = {.iov_base = &r, .iov_len = sizeof(r)};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &master, sizeof(int));
    ssize_t n;
    do {
        n = sendmsg(reply_fd, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n == (ssize_t)sizeof(r) ? 0 : -(n < 0 ? errno : EMSGSIZE);
}

/* A pseudo-terminal from the container's own devpts (not the /dev/ptmx
 * symlink, which an image could replace): unlocked, sized as asked, its
 * master sent to the host.  The slave (opened through the master, no path)
 * goes into *slave.  Returns 0 or -errno. */
static int open_terminal(const struct sbx_exec_hdr *h, int reply_fd, int *slave)
{
    if (h->fault && (h->fault & 0xffff) == SBX_STEP_TTY)
        return -(int)(h->fault >> 16);
    int master = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0)
        return -errno;
    int unlock = 0, err = 0;
    struct winsize ws = {.ws_row = (unsigned short)(h->tty_size >> 16),
                         .ws_col = (unsigned short)(h->tty_size & 0xffff)};
    if (ioctl(master, TIOCSPTLCK, &unlock) < 0 || ioctl(master, TIOCSWINSZ, &ws) < 0)
        err = -errno;
    int peer = err ? -1 : ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (!err && peer < 0)
        err = -errno;
    if (!err)
        err = send_master(reply_fd, master);
    close(master);
    if (err) {
        if (peer >= 0)
            close(peer);
        return err;
    }
    *slave = peer;
    return 0;
}

static void close_fds(const int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* SBX_EXEC_HOLD: keep the main command (its request and copies of its
 * stdio) for a later START; replies STARTED with pid 0.  One at a time, no
 * command cgroup. */
static void hold_command(const struct sbx_command *cmd, int reply_fd, size_t len)
{
    if (held_len || !(cmd->hdr->flags & SBX_EXEC_MAIN) || cmd->cgroup_fd >= 0) {
        reply_failed(reply_fd, SBX_STEP_REQUEST, EBUSY, -1);
        return;
    }
    for (int i = 0; i < 3; i++)
        if ((held_stdio[i] = fcntl(cmd->stdio[i], F_DUPFD_CLOEXEC, 0)) < 0) {
            reply_failed(reply_fd, SBX_STEP_STDIO, errno, i);
            close_fds(held_stdio, i);
            held_stdio[0] = held_stdio[1] = held_stdio[2] = -1;
            return;
        }
    memcpy(held, request, len);
    held_len = len;
    struct sbx_reply r = {.type = SBX_REPLY_STARTED, .pid = 0};
    send_reply(reply_fd, &r);
}

/* START: run the held main command, replying on reply_fd (which it keeps). */
static void start_held(int reply_fd)
{
    struct sbx_command cmd;
    size_t len = held_len;
    int r = len ? 0 : -ENOENT;
    if (r == 0) {
        memcpy(request, held, len);
        r = sbx_command_parse(request, len, strings, MAX_STRINGS, &cmd);
    }
    if (r == 0 && stopping)
        r = -ESHUTDOWN;
    if (r < 0) {
        reply_failed(reply_fd, SBX_STEP_REQUEST, -r, -1);
        close(reply_fd);
        return;
    }
    held_len = 0;
    memcpy(cmd.stdio, held_stdio, sizeof(cmd.stdio));
    cmd.cgroup_fd = -1;
    if (!start_command(&cmd, reply_fd, len))
        close(reply_fd);
    close_fds(held_stdio, 3); /* the command has its own copies */
    held_stdio[0] = held_stdio[1] = held_stdio[2] = -1;
}

/* Handle an EXEC message: fds = [reply, stdin, stdout, stderr, cgroup?],
 * or with SBX_EXEC_TTY [reply, cgroup?]. */
static void handle_exec(size_t len, int *fds, int nfds)
{
    struct sbx_command cmd;
    int r = sbx_command_parse(request, len, strings, MAX_STRINGS, &cmd);
    int tty = r == 0 && (cmd.hdr->flags & SBX_EXEC_TTY);
    int cgroup = r == 0 && (cmd.hdr->flags & SBX_EXEC_CGROUP);
    if (r == 0 && nfds != (tty ? 1 : 4) + cgroup)
        r = -EBADMSG;
    if (r == 0 && stopping)
        r = -ESHUTDOWN;
    int kept = 0;
    if (r < 0 && nfds > 0) {
        reply_failed(fds[0], SBX_STEP_REQUEST, -r, -1);
    } else if (r == 0) {
        int slave = -1;
        if (tty && (r = open_terminal(cmd.hdr, fds[0], &slave)) < 0) {
            reply_failed(fds[0], SBX_STEP_TTY, -r, -1);
        } else {
            if (tty)
                cmd.stdio[0] = cmd.stdio[1] = cmd.stdio[2] = slave;
            else
                memcpy(cmd.stdio, fds + 1, sizeof(cmd.stdio));
            cmd.cgroup_fd = cgroup ? fds[nfds - 1] : -1;
            if (cmd.hdr->flags & SBX_EXEC_HOLD)
                hold_command(&cmd, fds[0], len);
            else
                kept = start_command(&cmd, fds[0], len);
        }
        if (slave >= 0)
            close(slave); /* the command has its own copies */
    }
    close_fds(fds + kept, nfds - kept);
}

static void reap(void);

/* Up to two pids of an open cgroup.procs (read from its start: the kernel
 * lists them anew): how many there are (2: two or more), or -1. */
static int cgroup_pids(int procs_fd, pid_t pids[2])
{
    char buf[64];
    ssize_t n = pread(procs_fd, buf, sizeof(buf) - 1, 0);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    int count = 0;
    for (char *p = buf, *end; *p && count < 2; p = end + (*end == '\n')) {
        long v = strtol(p, &end, 10);
        if (end == p)
            return -1;
        pids[count++] = (pid_t)v;
    }
    return count;
}

/* A command in its own cgroup ended: is the cgroup ready for the host's
 * next command (nothing of this one left in it; its forker, if any, may
 * stay)?  A forker beside leftovers is retired, since a kill of the next
 * command would reach them.  *fresh: empty, without a forker, and one may
 * start there.  Race-free: once only the forker is left, nothing else in
 * the cgroup can fork (it forks only on our request).  Not ready either
 * with a cgroup below it (a kernfs directory's links: 2 + its
 * subdirectories), which a container that may write its cgroup tree can
 * make and move a daemon into: cgroup.procs lists only a cgroup's own. */
static int cgroup_ready_at(int cgroup_fd, int procs_fd, int *fresh)
{
    struct stat st;
    pid_t pids[2];
    int n = fstat(cgroup_fd, &st) < 0 ? -1 : cgroup_pids(procs_fd, pids);
    if (n >= 0 && st.st_nlink > 2)
        n = 2; /* (as leftovers) */
    struct forker *f = n < 0 ? NULL : find_forker(&st);
    int ready = n == 0 || (n == 1 && f && pids[0] == f->pid);
    if (f && (!ready || n == 0))
        retire_forker(f); /* (n == 0: it has ended already) */
    int live = 0;
    for (int i = 0; i < MAX_FORKERS; i++)
        live += forkers[i].pid > 0;
    /* (not PID 1: a launcher, forker or not, ends at its start) */
    *fresh = n == 0 && live < (int)plan->max_forkers && bounding_set && !stopping && !shared_pidns &&
             (plan->flags & SBX_PLAN_LAUNCHER);
    return ready;
}

static int cgroup_ready(int cgroup_fd, int *fresh)
{
    int procs = openat(cgroup_fd, "cgroup.procs", O_RDONLY | O_CLOEXEC);
    int ready = procs >= 0 && cgroup_ready_at(cgroup_fd, procs, fresh);
    if (procs >= 0)
        close(procs);
    else
        *fresh = 0;
    return ready;
}

/* The same at the exit of a command: through its forker's fds when a
 * forker forked it (and still lives: else forker_ended gave it the fd). */
static int command_cgroup_ready(const struct child *c, int *fresh)
{
    *fresh = 0;
    if (c->forker)
        return cgroup_ready_at(c->forker->cgroup_fd, c->forker->procs_fd, fresh);
    return c->cgroup_fd >= 0 && cgroup_ready(c->cgroup_fd, fresh);
}

/* Start a forker in that cgroup, which keeps the (high) fd cgroup_fd
 * either way (best effort: without one, the cgroup launcher forks its
 * commands). */
static void start_forker(int cgroup_fd)
{
    struct stat st;
    struct forker *f = NULL;
    for (int i = 0; !f && i < MAX_FORKERS; i++)
        if (forkers[i].pid == 0)
            f = &forkers[i];
    if (!f) {
        close(cgroup_fd);
        return;
    }
    int procs = openat(cgroup_fd, "cgroup.procs", O_RDONLY | O_CLOEXEC);
    *f = (struct forker){.fd = -1, .cgroup_fd = cgroup_fd, .procs_fd = -1};
    if (procs >= 0) {
        f->procs_fd = fcntl(procs, F_DUPFD_CLOEXEC, SBX_FD_LAUNCHER); /* (high: see start_command) */
        close(procs);
    }
    if (f->procs_fd >= 0 && fstat(cgroup_fd, &st) == 0)
        f->fd = sbx_launcher_start(plan, bounding_keep, 0, cgroup_fd, &f->pid);
    if (f->fd < 0) {
        close_forker_fds(f);
        *f = (struct forker){.fd = -1, .cgroup_fd = -1, .procs_fd = -1};
        return;
    }
    f->dev = st.st_dev;
    f->ino = st.st_ino;
}

/* Begin a graceful stop: SIGTERM to all, SIGKILL when the timer fires. */
static void begin_stop(int timer_fd, uint64_t grace_ms)
{
    stopping = 1;
    signal_all(SIGTERM);
    struct itimerspec t = {
        .it_value = {.tv_sec = (time_t)(grace_ms / 1000), .tv_nsec = (long)(grace_ms % 1000) * 1000000L}};
    if (grace_ms == 0)
        t.it_value.tv_nsec = 1;
    timerfd_settime(timer_fd, 0, &t, NULL);
    reap(); /* an empty container ends now */
}

static void handle_signal_msg(const struct sbx_signal_msg *m)
{
    struct child *c = find_by_id(m->id);
    if (c)
        kill(m->group ? -c->pid : c->pid, m->sig);
}

/* Receive one control message; returns 0, or -1 when the host is gone. */
static int handle_control(int timer_fd)
{
    int fds[MAX_FDS], nfds, flags;
    ssize_t n = sbx_recv_with_fds(CONTROL_FD, request, sizeof(request), fds, MAX_FDS, &nfds, &flags);
    if (n <= 0) {
        int retry = n < 0 && (errno == EINTR || errno == EAGAIN);
        close_fds(fds, nfds);
        return retry ? 0 : -1;
    }
    uint32_t type = (size_t)n >= sizeof(uint32_t) ? *(uint32_t *)request : 0;
    if (type == SBX_MSG_EXEC && !(flags & (MSG_TRUNC | MSG_CTRUNC))) {
        handle_exec((size_t)n, fds, nfds);
        return 0;
    }
    if (type == SBX_MSG_START && nfds == 1 && !(flags & (MSG_TRUNC | MSG_CTRUNC))) {
        start_held(fds[0]);
        return 0;
    }
    close_fds(fds, nfds);
    const struct sbx_signal_msg *m = (const struct sbx_signal_msg *)request;
    if ((size_t)n == sizeof(*m) && type == SBX_MSG_SIGNAL)
        handle_signal_msg(m);
    else if ((size_t)n == sizeof(*m) && type == SBX_MSG_STOP)
        begin_stop(timer_fd, m->grace_ms);
    return 0;
}

static int any_child(void)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i].pid > 0)
            return 1;
    return 0;
}

/* Reap every zombie; report our commands' exits.  Ends the container when
 * the main command ended, or when stopping and nothing is left. */
static void reap(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG | __WALL)) > 0) {
        for (int i = 0; i < 2; i++)
            if (pid == launchers[i].pid) {
                launchers[i].pid = 0;
                forget_launcher(&launchers[i]);
            }
        for (int i = 0; i < MAX_FORKERS; i++)
            if (pid == forkers[i].pid)
                forker_ended(&forkers[i]);
        struct child *c = find_child(pid);
        if (!c)
            continue;
        struct sbx_reply r = {.type = SBX_REPLY_EXITED, .pid = pid, .status = status};
        int fresh; /* its cgroup is empty: a forker may start there */
        if (command_cgroup_ready(c, &fresh))
            r.flags = SBX_REPLY_CGROUP_READY;
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
            fresh = 0; /* most likely the host killed the cgroup (a timeout, a cancel): it goes */
        if (c->main) {
            signal_all(SIGKILL);
            reap_all();
            send_reply(c->reply_fd, &r);
            if (!(plan->flags & SBX_PLAN_DETACHED))
                _exit(0);
            /* Whoever waits for a detached init (conmon, a containerd shim)
             * reads the main command's status from ours, as from runc's. */
            _exit(WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status));
        }
        send_reply(c->reply_fd, &r);
        close(c->reply_fd);
        if (fresh && c->cgroup_fd >= 0)
            start_forker(c->cgroup_fd); /* (which keeps it) */
        else if (c->cgroup_fd >= 0)
            close(c->cgroup_fd);
        c->cgroup_fd = -1;
        c->forker = NULL;
        c->pid = 0;
    }
    if (stopping && !any_child() && waitpid(-1, NULL, WNOHANG | __WALL) < 0 && errno == ECHILD)
        _exit(0);
}

/* A signal sent to the init goes to the main command, or to every
 * process when the container has none. */
static void forward_signal(int sig)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i].main && children[i].pid > 0) {
            kill(children[i].pid, sig);
            return;
        }
    signal_all(sig);
}

/* What the init itself still calls once set up: kill() of commands that run
 * as other users (CAP_KILL) and the one drop of the bounding set to the
 * container's at the first command (CAP_SETPCAP).  Not CAP_SYS_ADMIN: each
 * command's child names its own pid to the host (command.c: announce_pid). */
#define OWN_CAPS ((1ULL << CAP_KILL) | (1ULL << CAP_SETPCAP))

/* Lock the init down once the container is set up, before it serves any
 * request.  Capabilities: the permitted set keeps only plan->init_caps
 * (the container's capabilities, which a root command can only receive
 * from its parent under no_new_privs, plus SETUID, SETGID, SETPCAP and KILL
 * for the command set-up: see INIT_RUNTIME_CAPABILITIES in Python); the
 * effective set only OWN_CAPS (each command's child raises the rest from
 * the permitted set, command.c); inheritable and ambient empty.  Then
 * no_new_privs (every command sets it anyway; not with SBX_PLAN_KEEP_PRIVS,
 * which installs the filter first instead), and the init's own filter,
 * which refuses only what no process of this container may do (it is
 * inherited by every command, whatever its policy: see seccomp.py). */
static void lock_down(const struct sbx_plan *p)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    struct sock_fprog prog = {.len = (unsigned short)(p->init_filter_len / sizeof(struct sock_filter)),
                              .filter = (struct sock_filter *)p->init_filter};
    int keep_privs = (p->flags & SBX_PLAN_KEEP_PRIVS) != 0;
    /* Without no_new_privs the filter needs CAP_SYS_ADMIN: first, then. */
    if (keep_privs && p->init_filter_len && syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
        sbx_report_fail(SBX_FD_ERROR, SBX_STEP_LOCKDOWN, errno, 2);
    if (syscall(SYS_capget, &hdr, data) < 0)
        sbx_report_fail(SBX_FD_ERROR, SBX_STEP_LOCKDOWN, errno, 0);
    for (int i = 0; i < 2; i++) {
        data[i].permitted &= (uint32_t)(p->init_caps >> (32 * i));
        data[i].effective = data[i].permitted & (uint32_t)(OWN_CAPS >> (32 * i));
        data[i].inheritable = 0; /* clears the ambient set too */
    }
    if (syscall(SYS_capset, &hdr, data) < 0)
        sbx_report_fail(SBX_FD_ERROR, SBX_STEP_LOCKDOWN, errno, 0);
    if (keep_privs)
        return;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        sbx_report_fail(SBX_FD_ERROR, SBX_STEP_LOCKDOWN, errno, 1);
    if (p->init_filter_len && syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
        sbx_report_fail(SBX_FD_ERROR, SBX_STEP_LOCKDOWN, errno, 2);
}

int main(int argc, char **argv)
{
    prctl(PR_SET_NAME, "sbx-init", 0, 0, 0); /* not "memfd:sbx-init" in ps */
    shared_pidns = getpid() != 1;
    if (shared_pidns) /* the orphans of our commands come to us, not to that namespace's init */
        prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    plan = sbx_setup(argc > 1 && strcmp(argv[1], "net") == 0);
    if (plan->fault_errno && plan->fault_step == SBX_STEP_LOCKDOWN)
        sbx_report_fail(SBX_FD_ERROR, SBX_STEP_LOCKDOWN, plan->fault_errno, -1);
    lock_down(plan);
    /* Not dumpable: no process of the container may ptrace the init or
     * read its memory, environment or fds (the control socket, the host
     * process's pidfd).  Only now: a rootless parent must still write our
     * /proc/PID/setgroups above; and after the capset, which may reset it. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    sbx_reset_dispositions(); /* once; commands inherit the defaults */
    close(SBX_FD_ERROR); /* EOF: the container is set up */
    int sig_fd = signalfd(-1, &all, SFD_CLOEXEC);
    int timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    if (sig_fd < 0 || timer_fd < 0)
        return 1;
    struct pollfd pfd[4] = {
        {.fd = CONTROL_FD, .events = POLLIN},
        {.fd = PARENT_FD, .events = POLLIN},
        {.fd = sig_fd, .events = POLLIN},
        {.fd = timer_fd, .events = POLLIN},
    };
    int detached = (plan->flags & SBX_PLAN_DETACHED) != 0;
    for (;;) {
        if (poll(pfd, 4, -1) < 0 && errno != EINTR)
            end_container();
        if (pfd[1].revents && !detached)
            end_container(); /* the host process is gone */
        if (pfd[1].revents & POLLIN) {
            /* A runtime command connected: its connection is the control
             * socket now (the previous one, if any, has done its sending). */
            int conn = accept4(PARENT_FD, NULL, NULL, SOCK_CLOEXEC);
            if (conn >= 0 && conn != CONTROL_FD) { /* (it is CONTROL_FD when that was free) */
                dup3(conn, CONTROL_FD, O_CLOEXEC);
                close(conn);
            }
            if (conn >= 0)
                pfd[0].fd = CONTROL_FD;
        }
        if (pfd[2].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si) && si.ssi_signo != SIGCHLD)
                forward_signal((int)si.ssi_signo);
            reap();
        }
        if (pfd[3].revents & POLLIN) {
            uint64_t expirations;
            if (read(timer_fd, &expirations, sizeof(expirations)) > 0) {
                signal_all(SIGKILL);
                reap();
            }
        }
        int gone = 0;
        if (pfd[0].revents & POLLIN)
            gone = handle_control(timer_fd) < 0;
        else if (pfd[0].revents)
            gone = 1;
        if (gone && !detached)
            end_container();
        if (gone) { /* that runtime command is done: wait for the next */
            close(CONTROL_FD);
            pfd[0].fd = -1;
        }
    }
}
