/* Process set-up of one command, in a child forked by the init: stdio,
 * session, signals, rlimits, cwd, user, capabilities, no_new_privs, the
 * seccomp filter, then execve with a PATH search.  Async-signal-safe and allocation-free. */
#include "command.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "report.h"
#include "syscalls.h"

int sbx_command_parse(char *buf, size_t len, char **argv_space, size_t n_space, struct sbx_command *cmd)
{
    const struct sbx_exec_hdr *h = (const struct sbx_exec_hdr *)buf;
    if (len < sizeof(*h) || h->n_rlimits > SBX_MAX_RLIMITS || h->argc == 0 ||
        (size_t)h->argc + h->envc + 2 > n_space)
        return -EINVAL;
    size_t off = sizeof(*h);
    size_t fixed = (size_t)h->n_groups * 4 + (size_t)h->n_rlimits * sizeof(struct sbx_rlimit);
    if (h->n_groups > NGROUPS_MAX || off + fixed + h->strings_len != len || h->strings_len == 0 ||
        buf[len - 1] != '\0')
        return -EINVAL;
    cmd->hdr = h;
    cmd->rlimits = (const struct sbx_rlimit *)(buf + off);
    off += (size_t)h->n_rlimits * sizeof(struct sbx_rlimit);
    cmd->groups = (const uint32_t *)(buf + off);
    off += (size_t)h->n_groups * 4;
    /* Walk the NUL-separated strings: cwd, search path, argv, envp. */
    size_t want = 2 + (size_t)h->argc + h->envc, found = 0;
    char *s = buf + off;
    const char *strings[2];
    while (s < buf + len && found < want) {
        if (found < 2)
            strings[found] = s;
        else
            argv_space[found - 2 + (found - 2 >= h->argc ? 1 : 0)] = s;
        found++;
        s += strlen(s) + 1;
    }
    if (found != want || s != buf + len)
        return -EINVAL;
    cmd->cwd = strings[0];
    cmd->search_path = strings[1];
    argv_space[h->argc] = NULL;
    argv_space[h->argc + 1 + h->envc] = NULL;
    cmd->argv = argv_space;
    cmd->envp = argv_space + h->argc + 1;
    return 0;
}

static int report_fd;
static uint32_t fault;

/* Tests force each step to fail once through hdr->fault. */
static void fault_point(int step)
{
    if (fault && (int)(fault & 0xffff) == step)
        sbx_report_fail(report_fd, step, (int)(fault >> 16), -1);
}

#define CHECK(step, expr)                                  \
    do {                                                   \
        if ((expr) < 0)                                    \
            sbx_report_fail(report_fd, (step), errno, -1); \
    } while (0)

static void set_stdio(const struct sbx_command *cmd)
{
    int high[3];
    for (int i = 0; i < 3; i++) {
        high[i] = sbx_fd_high(cmd->stdio[i]);
        if (high[i] < 0)
            sbx_report_fail(report_fd, SBX_STEP_STDIO, -high[i], i);
    }
    for (int i = 0; i < 3; i++)
        if (dup2(high[i], i) < 0)
            sbx_report_fail(report_fd, SBX_STEP_STDIO, errno, i);
    /* Only stdio survives the exec; the report pipe lives until then. */
    CHECK(SBX_STEP_STDIO, sbx_close_range(3, ~0U, CLOSE_RANGE_CLOEXEC));
}

/* The kernel's struct sigaction: the raw syscall also resets the signals a
 * libc reserves for itself (32-34), which an ignoring host process passes on. */
struct kernel_sigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)(void);
    uint64_t mask;
};

void sbx_reset_dispositions(void)
{
    struct kernel_sigaction dfl = {.handler = SIG_DFL};
    for (int sig = 1; sig <= 64; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof(dfl.mask));
}

int sbx_drop_bounding(uint64_t keep)
{
    for (int cap = 0; cap < 64; cap++) {
        if (keep & (1ULL << cap))
            continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            return -errno;
    }
    return 0;
}

/* The init reset the dispositions once (it handles no signal itself);
 * what is left is the mask it blocks everything with. */
static void reset_signals(void)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static void set_rlimits(const struct sbx_command *cmd)
{
    for (uint32_t i = 0; i < cmd->hdr->n_rlimits; i++) {
        const struct sbx_rlimit *r = &cmd->rlimits[i];
        struct rlimit lim = {.rlim_cur = r->soft, .rlim_max = r->hard};
        if (setrlimit((int)r->resource, &lim) < 0)
            sbx_report_fail(report_fd, SBX_STEP_RLIMIT, errno, (int)i);
    }
}

/* The init's own bounding set is normally the kept set already (it
 * dropped the rest once); only a different set needs the loop here. */
static void drop_bounding_caps(const struct sbx_command *cmd)
{
    if (cmd->cap_bounding != cmd->hdr->cap_keep) {
        int r = sbx_drop_bounding(cmd->hdr->cap_keep);
        if (r < 0)
            sbx_report_fail(report_fd, SBX_STEP_CAPS, -r, -1);
    }
    CHECK(SBX_STEP_CAPS, prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0));
}

static void set_user(const struct sbx_command *cmd)
{
    const struct sbx_exec_hdr *h = cmd->hdr;
    /* Explicit sets: a user other than root keeps its permitted set across
     * the setresuid (set_caps then cuts it to the sets asked for). */
    if ((h->flags & SBX_EXEC_CAP_SETS) && h->uid != 0)
        CHECK(SBX_STEP_CAPS, prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0));
    if (h->flags & SBX_EXEC_SET_GROUPS)
        CHECK(SBX_STEP_USER, setgroups(h->n_groups, (const gid_t *)cmd->groups));
    CHECK(SBX_STEP_USER, setresgid(h->gid, h->gid, h->gid));
    CHECK(SBX_STEP_USER, setresuid(h->uid, h->uid, h->uid));
}

/* Inheritable empty; effective and permitted cut to what we keep (for
 * root; nothing for other users).  execve then gives root the bounding
 * set, which drop_bounding_caps() made exactly the kept set.  With
 * SBX_EXEC_CAP_SETS, the sets asked for, and the ambient set raised (it
 * must lie in the permitted and inheritable sets: Python checked). */
static void set_caps(const struct sbx_command *cmd)
{
    const struct sbx_exec_hdr *h = cmd->hdr;
    int sets = (h->flags & SBX_EXEC_CAP_SETS) != 0;
    uint64_t keep = h->uid == 0 ? h->cap_keep : 0;
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    CHECK(SBX_STEP_CAPS, syscall(SYS_capget, &hdr, data));
    for (int i = 0; i < 2; i++) {
        int shift = 32 * i;
        data[i].permitted &= (uint32_t)((sets ? h->cap_permitted : keep) >> shift);
        data[i].effective =
            sets ? data[i].permitted & (uint32_t)(h->cap_effective >> shift) : data[i].permitted;
        data[i].inheritable = sets ? (uint32_t)(h->cap_inheritable >> shift) : 0;
    }
    CHECK(SBX_STEP_CAPS, syscall(SYS_capset, &hdr, data));
    for (int cap = 0; sets && cap < 64; cap++)
        if (h->cap_ambient & (1ULL << cap))
            CHECK(SBX_STEP_CAPS, prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0));
}

/* The init keeps in its effective set only what it uses itself (init.c:
 * lock_down); the command's set-up below needs the rest of its permitted
 * set: SETUID/SETGID (set_user), SYS_RESOURCE for a raised hard limit and
 * DAC_OVERRIDE for the cwd, when the container has them. */
static void raise_effective(void)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    CHECK(SBX_STEP_CAPS, syscall(SYS_capget, &hdr, data));
    data[0].effective = data[0].permitted;
    data[1].effective = data[1].permitted;
    CHECK(SBX_STEP_CAPS, syscall(SYS_capset, &hdr, data));
}

/* Install the container's filter: the last step, so that it need not allow
 * anything the set-up above does (after no_new_privs, which an unprivileged
 * seccomp() requires).  The init's own filter (init.c: lock_down) is
 * inherited, and refuses only what no command of the container may do. */
static void install_filter(const struct sbx_command *cmd)
{
    if (cmd->filter_len == 0)
        return;
    struct sock_fprog prog = {.len = (unsigned short)(cmd->filter_len / sizeof(struct sock_filter)),
                              .filter = (struct sock_filter *)cmd->filter};
    CHECK(SBX_STEP_SECCOMP, syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog));
}

/* execve argv[0], searching search_path when it has no slash, the way
 * execvp does: EACCES wins over ENOENT. */
static void exec_command(const struct sbx_command *cmd)
{
    const char *name = cmd->argv[0];
    if (strchr(name, '/')) {
        execve(name, cmd->argv, cmd->envp);
        sbx_report_fail(report_fd, SBX_STEP_EXEC, errno, -1);
    }
    char path[PATH_MAX];
    size_t nlen = strlen(name);
    int err = ENOENT;
    for (const char *p = cmd->search_path; *p;) {
        const char *end = strchrnul(p, ':');
        size_t dlen = (size_t)(end - p);
        if (dlen && dlen + 1 + nlen < sizeof(path)) {
            memcpy(path, p, dlen);
            path[dlen] = '/';
            memcpy(path + dlen + 1, name, nlen + 1);
            execve(path, cmd->argv, cmd->envp);
            if (errno == EACCES)
                err = EACCES;
            else if (errno != ENOENT && errno != ENOTDIR)
                sbx_report_fail(report_fd, SBX_STEP_EXEC, errno, -1);
        }
        p = *end ? end + 1 : end;
    }
    sbx_report_fail(report_fd, SBX_STEP_EXEC, err, -1);
}

/* Tell the host our pid, first (every later failure is reported after it):
 * any message of ours carries our credentials, which the kernel fills in
 * (the host's end has SO_PASSCRED) and translates into the host's pid
 * namespace.  A process may always name itself; the init would need
 * CAP_SYS_ADMIN to name us, and a pidfd's pid is gone once we are reaped. */
static void announce_pid(const struct sbx_command *cmd)
{
    if (cmd->reply_fd < 0)
        return;
    struct sbx_reply r = {.type = SBX_REPLY_PID, .pid = (int32_t)syscall(SYS_getpid)};
    ssize_t n;
    do {
        n = send(cmd->reply_fd, &r, sizeof(r), MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof(r)) /* the host gave up on us (EPIPE): do not run */
        sbx_report_fail(report_fd, SBX_STEP_FORK, n < 0 ? errno : EMSGSIZE, -1);
}

void sbx_command_exec(const struct sbx_command *cmd, int fd)
{
    report_fd = fd;
    fault = cmd->hdr->fault;
    announce_pid(cmd);
    raise_effective();
    fault_point(SBX_STEP_STDIO);
    set_stdio(cmd);
    CHECK(SBX_STEP_STDIO, setsid());
    /* A terminal (the init made it our stdio) becomes the new session's
     * controlling terminal: ^C, job control and SIGHUP work as on a login. */
    if (cmd->hdr->flags & SBX_EXEC_TTY)
        CHECK(SBX_STEP_TTY, ioctl(0, TIOCSCTTY, 0));
    reset_signals();
    fault_point(SBX_STEP_RLIMIT);
    set_rlimits(cmd);
    fault_point(SBX_STEP_CHDIR);
    /* As root first (a cwd the user may not search until it is the user,
     * e.g. in a 0700 home, when the container lacks DAC_OVERRIDE: again
     * once it is the command's user, as runc does). */
    int cwd_err = chdir(cmd->cwd) < 0 ? errno : 0;
    if (cwd_err && cwd_err != EACCES)
        sbx_report_fail(report_fd, SBX_STEP_CHDIR, cwd_err, -1);
    fault_point(SBX_STEP_CAPS);
    drop_bounding_caps(cmd);
    /* Without no_new_privs only a privileged process may install a filter:
     * here, while we still hold the init's capabilities (as runc does; the
     * filter then covers the user and capability changes below too). */
    int nnp = (cmd->hdr->flags & SBX_EXEC_NO_NEW_PRIVS) != 0;
    if (!nnp) {
        fault_point(SBX_STEP_SECCOMP);
        install_filter(cmd);
    }
    fault_point(SBX_STEP_USER);
    set_user(cmd);
    set_caps(cmd);
    if (cwd_err)
        CHECK(SBX_STEP_CHDIR, chdir(cmd->cwd));
    fault_point(SBX_STEP_NO_NEW_PRIVS);
    if (nnp)
        CHECK(SBX_STEP_NO_NEW_PRIVS, prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
    if (nnp) {
        fault_point(SBX_STEP_SECCOMP);
        install_filter(cmd);
    }
    fault_point(SBX_STEP_EXEC);
    exec_command(cmd);
    _exit(127);
}
