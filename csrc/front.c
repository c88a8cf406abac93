/* sandboxlib-runtime, the installed command of the OCI runtime: a small
 * static program in front of the Python implementation
 * (sandboxlib/oci/cli.py, installed beside it as sandboxlib-runtime-python).
 *
 * Callers run the light verbs several times per container (podman: start,
 * state, kill, delete; containerd's shim more), and the interpreter's
 * start-up alone costs ten times runc's whole verb.  So this program serves
 * state, start, kill and delete of a container itself, from ROOT/ID/front,
 * which Python wrote at create (sandboxlib/oci/control.py, front_record:
 * the state's texts in each status, the init's pid and start time, the
 * cgroup directories).  Python decided; this only executes.
 *
 * Everything else runs the Python implementation with the same arguments:
 * other verbs, a container without a front record (one with hooks), and
 * every error, before this program has changed anything (Python finds the
 * same condition and reports it: each message, exit status and --log line
 * has one definition).  Two answers mirror Python's rules instead (tested
 * against them): `delete --force` of a missing container succeeds for the
 * ids Python accepts, and without --root the root is state.default_root's.
 * The failures after a change: a START the init answers with FAILED,
 * handed over as `start --reply=STEP,ERRNO,INDEX`; a process of
 * `kill --all` that refuses the signal (EPERM: Python signals them all
 * again and reports it). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sbx.h"

#define PYTHON_PROGRAM "sandboxlib-runtime-python" /* pyproject.toml's console script */
#define FRONT_FORMAT "sandboxlib-runtime front 1" /* control.FRONT_FORMAT */
#define MAX_CGROUPS 16
#define WAIT_GONE_MS 10000 /* control.wait_gone */
#define CGROUP_BUSY_NS 5000000000LL /* control._remove_cgroups */

enum status { CREATED, RUNNING, STOPPED };
static const char *const STATUS_NAMES[] = {"created", "running", "stopped"};

struct front {
    int dirfd; /* ROOT/ID, O_PATH */
    char path[PATH_MAX]; /* ROOT/ID */
    long pid;
    unsigned long long init_start;
    int n_cgroups;
    char *cgroups[MAX_CGROUPS];
    char *states[3];
};

static char **python_argv;

/* Run the Python implementation with our arguments (and `extra`, when not NULL). */
static _Noreturn void python(const char *extra)
{
    static char program[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", program, sizeof program - sizeof PYTHON_PROGRAM);
    program[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(program, '/');
    if (slash) {
        strcpy(slash + 1, PYTHON_PROGRAM);
        if (extra) {
            char **p = python_argv;
            while (*p)
                p++;
            *p = (char *)extra; /* main() left a slot */
        }
        execv(program, python_argv);
    }
    fprintf(stderr, "sandboxlib-runtime: cannot run %s: %s\n", slash ? program : PYTHON_PROGRAM,
            strerror(errno));
    exit(1);
}

/* state._ID: [A-Za-z0-9][A-Za-z0-9_.+-]{0,1023} (test_oci_front compares the two). */
static int valid_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 1024 || !isalnum((unsigned char)id[0]))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!isalnum((unsigned char)id[i]) && !strchr("_.+-", id[i]))
            return 0;
    return 1;
}

static char *read_file_at(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0)
        return NULL;
    char *text = NULL;
    if (fstat(fd, &st) == 0 && st.st_size < (1 << 24) && (text = malloc((size_t)st.st_size + 1))) {
        ssize_t n = read(fd, text, (size_t)st.st_size);
        if (n != st.st_size) {
            free(text);
            text = NULL;
        } else {
            text[n] = '\0';
        }
    }
    close(fd);
    return text;
}

/* Parse ROOT/ID/front (see control.front_record); 0 when it is there and whole, -ENOENT without ROOT/ID. */
static int load_front(struct front *f, const char *root, const char *id)
{
    memset(f, 0, sizeof *f);
    if (snprintf(f->path, sizeof f->path, "%s/%s", root, id) >= (int)sizeof f->path)
        return -1;
    f->dirfd = open(f->path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (f->dirfd < 0)
        return errno == ENOENT ? -ENOENT : -1;
    char *text = read_file_at(f->dirfd, "front");
    if (!text)
        return -1;
    int have = 0;
    for (char *line = text, *next; *line; line = next) {
        char *end = strchr(line, '\n');
        if (!end)
            return -1; /* every line ends with one */
        *end = '\0';
        next = end + 1;
        char *value = strchr(line, ' ');
        if (line == text) {
            if (strcmp(line, FRONT_FORMAT) != 0)
                return -1;
            continue;
        }
        if (!value)
            return -1;
        *value++ = '\0';
        if (strcmp(line, "pid") == 0) {
            f->pid = strtol(value, NULL, 10);
            have |= 1;
        } else if (strcmp(line, "init_start") == 0) {
            f->init_start = strtoull(value, NULL, 10);
            have |= 2;
        } else if (strcmp(line, "cgroup") == 0) {
            if (f->n_cgroups == MAX_CGROUPS)
                return -1;
            f->cgroups[f->n_cgroups++] = value;
        } else if (strcmp(line, "state") == 0) {
            char *json = strchr(value, ' ');
            if (!json)
                return -1;
            *json++ = '\0';
            for (int s = CREATED; s <= STOPPED; s++)
                if (strcmp(value, STATUS_NAMES[s]) == 0)
                    f->states[s] = json;
        }
    }
    return have == 3 && f->states[CREATED] && f->states[RUNNING] && f->states[STOPPED] && f->pid > 0 ? 0 : -1;
}

/* Field 22 of /proc/PID/stat, or 0 when the process is gone or a zombie (state.start_time). */
static unsigned long long start_time(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ' || p[2] == 'Z' || p[2] == 'X')
        return 0;
    p += 2; /* field 3, the state; the start time is 19 fields on */
    for (int field = 3; field < 22 && p; field++)
        p = strchr(p, ' ') ? strchr(p, ' ') + 1 : NULL;
    return p ? strtoull(p, NULL, 10) : 0;
}

static enum status status_of(const struct front *f)
{
    if (start_time(f->pid) != f->init_start)
        return STOPPED;
    return faccessat(f->dirfd, "started", F_OK, 0) == 0 ? RUNNING : CREATED;
}

static int lock_container(const struct front *f)
{
    int fd = openat(f->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || flock(fd, LOCK_EX) < 0)
        python(NULL);
    return fd; /* held until exit (or exec: close-on-exec) */
}

/* Signal the init unless another process took its pid; 0 when sent (control._signal_init). */
static int signal_init(const struct front *f, int sig)
{
    int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)f->pid, 0);
    if (pidfd < 0)
        return -1;
    int rc =
        start_time(f->pid) == f->init_start ? (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) : -1;
    close(pidfd);
    return rc < 0 ? -1 : 0;
}

static int state_verb(const struct front *f)
{
    puts(f->states[status_of(f)]);
    return fflush(stdout) == 0 ? 0 : 1;
}

static int send_start(const struct front *f, int reply_fd)
{
    char address[64];
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(address, sizeof address, "/proc/self/fd/%d/init.sock", f->dirfd);
    strcpy(sun.sun_path, address);
    int control = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (control < 0 || connect(control, (struct sockaddr *)&sun, sizeof sun) < 0)
        return -1;
    uint32_t type = SBX_MSG_START;
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct iovec iov = {.iov_base = &type, .iov_len = sizeof type};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &reply_fd, sizeof(int));
    ssize_t sent = sendmsg(control, &msg, MSG_NOSIGNAL);
    close(control);
    return sent == (ssize_t)sizeof type ? 0 : -1;
}

/* start (control.start): release the held main process; STARTED or a report for Python. */
static int start_verb(const struct front *f)
{
    lock_container(f);
    if (status_of(f) != CREATED)
        python(NULL);
    int started = openat(f->dirfd, "started", O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
    if (started < 0)
        python(NULL);
    close(started);
    struct sbx_reply reply = {.type = 0, .report = {SBX_STEP_REQUEST, ESRCH, -1}};
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
        reply.report.err = errno;
    } else if (send_start(f, pair[1]) < 0) {
        reply.report.err = errno;
    } else {
        close(pair[1]);
        ssize_t n;
        do
            n = recv(pair[0], &reply, sizeof reply, 0);
        while ((n == sizeof reply && reply.type == SBX_REPLY_PID) || (n < 0 && errno == EINTR));
        if (n != sizeof reply)
            reply = (struct sbx_reply){.report = {SBX_STEP_REQUEST, ESRCH, -1}};
    }
    if (reply.type == SBX_REPLY_STARTED)
        return 0;
    static char report[80];
    snprintf(report, sizeof report, "--reply=%d,%d,%d", reply.report.step, reply.report.err,
             reply.report.index);
    python(report);
}

/* One of Python's signal names (signal.Signals, "SIG" optional, any case), or a number. */
static int signal_number(const char *name)
{
#define S(n)       \
    {              \
#n, SIG##n \
    }
    static const struct {
        const char *name;
        int number;
    } names[] = {S(HUP),  S(INT),  S(QUIT), S(ILL),  S(TRAP),  S(ABRT),   S(BUS),   S(FPE),
                 S(KILL), S(USR1), S(SEGV), S(USR2), S(PIPE),  S(ALRM),   S(TERM),  S(CHLD),
                 S(CONT), S(STOP), S(TSTP), S(TTIN), S(TTOU),  S(URG),    S(XCPU),  S(XFSZ),
                 S(PROF), S(IO),   S(PWR),  S(SYS),  S(WINCH), S(STKFLT), S(VTALRM)};
#undef S
    char *end;
    long number = strtol(name, &end, 10);
    if (name[0] >= '0' && name[0] <= '9')
        return *end == '\0' && number >= 1 && number < 65 ? (int)number : -1;
    const char *bare = strncasecmp(name, "SIG", 3) == 0 ? name + 3 : name;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(bare, names[i].name) == 0)
            return names[i].number;
    return -1;
}

static int kill_sig; /* for nftw's callback */

static int kill_procs(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)ftw;
    if (type != FTW_D)
        return 0;
    char name[PATH_MAX];
    snprintf(name, sizeof name, "%s/cgroup.procs", path);
    FILE *procs = fopen(name, "re");
    long pid;
    while (procs && fscanf(procs, "%ld", &pid) == 1)
        if (kill((pid_t)pid, kill_sig) < 0 && errno != ESRCH)
            python(NULL);
    if (procs)
        fclose(procs);
    return 0;
}

/* kill [--all] (control.kill): the init, and with --all the first cgroup's processes. */
static int kill_verb(const struct front *f, int sig, int all)
{
    if (status_of(f) == STOPPED)
        python(NULL);
    if (all && f->n_cgroups > 0) {
        kill_sig = sig;
        nftw(f->cgroups[0], kill_procs, 16, FTW_PHYS);
    }
    if (signal_init(f, sig) < 0 && !all)
        python(NULL);
    return 0;
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long cgroup_deadline;

static int remove_cgroup(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)ftw;
    if (type != FTW_DP)
        return 0;
    while (rmdir(path) < 0 && errno != ENOENT) {
        if (now_ns() > cgroup_deadline) {
            fprintf(stderr, "warning: cgroup %s is still busy\n", path);
            break;
        }
        nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
    }
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)ftw;
    (type == FTW_DP ? rmdir : unlink)(path);
    return 0;
}

/* delete [--force] (control.delete, destroy): the init killed and awaited, the cgroups and the state removed.
 */
static int delete_verb(const struct front *f, int force)
{
    lock_container(f);
    if (status_of(f) == RUNNING && !force)
        python(NULL);
    if (signal_init(f, SIGKILL) == 0) {
        int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)f->pid, 0);
        if (pidfd >= 0 && start_time(f->pid) == f->init_start)
            poll(&(struct pollfd){.fd = pidfd, .events = POLLIN}, 1, WAIT_GONE_MS);
        if (pidfd >= 0)
            close(pidfd);
    }
    cgroup_deadline = now_ns() + CGROUP_BUSY_NS;
    for (int i = 0; i < f->n_cgroups; i++)
        nftw(f->cgroups[i], remove_cgroup, 16, FTW_DEPTH | FTW_PHYS);
    nftw(f->path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* state._private: a directory only we can change, or none yet (Python makes it; or refuses it). */
static int private_or_missing(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT;
    return S_ISDIR(st.st_mode) && st.st_uid == geteuid() && !(st.st_mode & 022);
}

/* state.default_root: /run/... as root of the host's user namespace, else under $XDG_RUNTIME_DIR, else
 * in a directory of ours in /tmp; NULL when Python would refuse it (someone else could have placed it). */
static const char *default_root(void)
{
    static char root[PATH_MAX], base[64];
    char uid_map[256] = "";
    int fd = geteuid() == 0 ? open("/proc/self/uid_map", O_RDONLY | O_CLOEXEC) : -1;
    if (fd >= 0) {
        ssize_t len = read(fd, uid_map, sizeof uid_map - 1); /* (a proc file: no size to stat) */
        uid_map[len > 0 ? len : 0] = '\0';
        close(fd);
    }
    const char *expected[] = {"0", "0", "4294967295"};
    int n = 0;
    for (char *word = strtok(uid_map, " \t\n"); word; word = strtok(NULL, " \t\n"), n++)
        if (n >= 3 || strcmp(word, expected[n]) != 0)
            n = 4;
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (n == 3)
        snprintf(root, sizeof root, "/run/sandboxlib-runtime");
    else if (xdg && *xdg)
        snprintf(root, sizeof root, "%s/sandboxlib-runtime", xdg);
    else {
        snprintf(base, sizeof base, "/tmp/sandboxlib-runtime-%u", (unsigned)geteuid());
        snprintf(root, sizeof root, "%s/sandboxlib-runtime", base);
        if (!private_or_missing(base))
            return NULL;
    }
    return private_or_missing(root) ? root : NULL;
}

/* The value of a global option that takes one (--root X, --root=X), or NULL. */
static const char *option_value(char **argv, int *i, const char *name)
{
    size_t len = strlen(name);
    if (strncmp(argv[*i], name, len) != 0)
        return NULL;
    if (argv[*i][len] == '=')
        return argv[*i] + len + 1;
    if (argv[*i][len] == '\0' && argv[*i + 1])
        return argv[++*i];
    return NULL;
}

int main(int argc, char **argv)
{
    /* Python's argv: ours, room for one more, NULL. */
    python_argv = calloc((size_t)argc + 2, sizeof(char *));
    if (!python_argv)
        return 1;
    memcpy(python_argv, argv, (size_t)argc * sizeof(char *));

    const char *root = NULL, *value;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if ((value = option_value(argv, &i, "--root")))
            root = value;
        else if (!option_value(argv, &i, "--log") && !option_value(argv, &i, "--log-format") &&
                 !option_value(argv, &i, "--rootless") && strcmp(argv[i], "--debug") != 0)
            python(NULL); /* --systemd-cgroup, --version, --help, anything else */
    }
    if (i == argc)
        python(NULL);
    if (!root && !(root = default_root()))
        python(NULL); /* (Python says what is wrong with it) */
    const char *verb = argv[i++];
    if (strcmp(verb, "state") != 0 && strcmp(verb, "start") != 0 && strcmp(verb, "kill") != 0 &&
        strcmp(verb, "delete") != 0)
        python(NULL);
    const char *positional[2] = {NULL, NULL};
    int n_positional = 0, all = 0, force = 0;
    for (; i < argc; i++) {
        int is_kill = strcmp(verb, "kill") == 0, is_delete = strcmp(verb, "delete") == 0;
        if (is_kill && (strcmp(argv[i], "--all") == 0 || strcmp(argv[i], "-a") == 0))
            all = 1;
        else if (is_delete && (strcmp(argv[i], "--force") == 0 || strcmp(argv[i], "-f") == 0))
            force = 1;
        else if (argv[i][0] == '-' || n_positional == 2)
            python(NULL);
        else
            positional[n_positional++] = argv[i];
    }
    int kill_verb_args = strcmp(verb, "kill") == 0 && n_positional >= 1;
    if (!(n_positional == 1 || kill_verb_args) || !valid_id(positional[0]))
        python(NULL);
    struct front f;
    int loaded = load_front(&f, root, positional[0]);
    if (loaded == -ENOENT && force)
        return 0; /* control.delete: nothing to delete (containerd's shim asks twice; podman without --root)
                   */
    if (loaded < 0)
        python(NULL);
    if (strcmp(verb, "state") == 0)
        return state_verb(&f);
    if (strcmp(verb, "start") == 0)
        return start_verb(&f);
    if (strcmp(verb, "delete") == 0)
        return delete_verb(&f, force);
    if (strcmp(verb, "kill") == 0) {
        int sig = signal_number(positional[1] ? positional[1] : "SIGTERM");
        if (sig < 0)
            python(NULL);
        return kill_verb(&f, sig, all);
    }
    python(NULL);
}
