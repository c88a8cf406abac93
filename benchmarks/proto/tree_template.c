/* Issue 16 measurement prototype (not built by setup.py): the container's
 * mount tree for the default sb.run (host view), built as sbx-init does
 * today (the syscall sequence of `strace -f` of one sb.run) vs from a
 * template tree the host prepared once.  Modes, alternated per round:
 *   today     fresh tmpfs root, every op as today (incl. scratch base)
 *   tmpl-etc  as today, but /etc and its 8 masks come from one clone
 *   tmpl-ro   read-only template root (binds, masks, symlinks, mount
 *             points) cloned by the host per run and attached by the child;
 *             only /tmp, /run, /dev..., proc, sysfs made fresh
 * Prints per mode: median CPU (thread) of the tree's build in the child,
 * of the host's per-run clone, and the child's total CPU (wait4).
 * cc -O2 -o tree_template tree_template.c ; ./tree_template ROUNDS */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PY "/root/.pyenv/versions/3.11.7"
static int sys_open_tree(int d, const char *p, unsigned f)
{
    return syscall(SYS_open_tree, d, p, f);
}
static int sys_move(int fd, const char *fp, int td, const char *tp, unsigned f)
{
    return syscall(SYS_move_mount, fd, fp, td, tp, f);
}
static int sys_setattr(int d, const char *p, unsigned f, struct mount_attr *a)
{
    return syscall(SYS_mount_setattr, d, p, f, a, sizeof *a);
}
#define CK(x)                                                                           \
    do {                                                                                \
        if ((x) < 0) {                                                                  \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, strerror(errno)); \
            _exit(99);                                                                  \
        }                                                                               \
    } while (0)

static int newfs(const char *type, const char *k1, const char *v1, const char *k2, const char *v2,
                 unsigned attr)
{
    int fs = syscall(SYS_fsopen, type, FSOPEN_CLOEXEC);
    CK(fs);
    if (k1)
        CK(syscall(SYS_fsconfig, fs, v1 ? FSCONFIG_SET_STRING : FSCONFIG_SET_FLAG, k1, v1, 0));
    if (k2)
        CK(syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, k2, v2, 0));
    CK(syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0));
    int m = syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, attr);
    CK(m);
    close(fs);
    return m;
}
static int clone_tree(const char *path, unsigned rec, unsigned attr)
{
    int t = sys_open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | rec);
    CK(t);
    struct mount_attr a = {.attr_set = attr, .propagation = MS_PRIVATE};
    CK(sys_setattr(t, "", AT_EMPTY_PATH | rec, &a));
    return t;
}
static int in_root(int root, const char *p, unsigned extra)
{
    struct open_how h = {.flags = O_PATH | O_CLOEXEC | extra,
                         .resolve = RESOLVE_NO_MAGICLINKS | RESOLVE_IN_ROOT};
    return syscall(SYS_openat2, root, p, &h, sizeof h);
}
/* attach tree at path in root: openat2, mkdir (or create file) if missing, move_mount */
static void attach(int root, int tree, const char *path, int file)
{
    int t = in_root(root, path, 0);
    if (t < 0) {
        char dir[256];
        strcpy(dir, path);
        char *slash = strrchr(dir, '/');
        *slash = 0;
        int d = in_root(root, *dir ? dir : "/", O_DIRECTORY);
        CK(d);
        if (file)
            close(openat(d, slash + 1, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644));
        else
            CK(mkdirat(d, slash + 1, 0755));
        CK(t = openat(d, slash + 1, O_PATH | O_CLOEXEC | O_NOFOLLOW));
        close(d);
    }
    CK(sys_move(tree, "", t, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH));
    close(tree);
    close(t);
}
static void mask(int root, int src, const char *path)
{
    int t = in_root(root, path, O_NOFOLLOW);
    if (t < 0)
        return;
    struct stat st;
    fstat(t, &st);
    int c = sys_open_tree(src, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
    CK(c);
    CK(sys_move(c, "", t, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH));
    close(c);
    close(t);
}
static void symlink_in(int root, const char *dir, const char *target, const char *name)
{
    int d = in_root(root, dir, 0);
    CK(d);
    CK(symlinkat(target, d, name));
    close(d);
}
static void ro_rebind(int root, const char *path)
{
    int t = in_root(root, path, 0);
    if (t < 0)
        return;
    int c = sys_open_tree(t, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
    struct mount_attr a = {.attr_set = MOUNT_ATTR_RDONLY, .propagation = MS_PRIVATE};
    CK(sys_setattr(c, "", AT_EMPTY_PATH | AT_RECURSIVE, &a));
    CK(sys_move(c, "", t, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH));
    close(c);
    close(t);
}
static const char *etc_masks[] = {"/etc/shadow",           "/etc/shadow-", "/etc/gshadow",
                                  "/etc/gshadow-",         "/etc/ssh",     "/etc/ssl/private",
                                  "/etc/security/opasswd", "/etc/sudoers", "/etc/sudoers.d"};
static const char *devs[] = {"null", "zero", "full", "random", "urandom", "tty"};
static const char *proc_masks[] = {"/proc/acpi", "/proc/interrupts", "/proc/keys", "/proc/timer_list"};
static const char *proc_ro[] = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"};
#define NSE(a) (sizeof a / sizeof *a)

/* skip: the length of the prefix that the tree's root stands for ("/etc" for the /etc template) */
static void masks_into(int root, int null_tree, int empty, const char **list, size_t n, size_t skip)
{
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (lstat(list[i], &st) < 0)
            continue;
        mask(root, S_ISDIR(st.st_mode) ? empty : null_tree, list[i] + skip);
    }
}

enum mode { TODAY, TMPL_ETC, TMPL_RO, TMPL_MAX, NMODES };
static int etc_tmpl = -1, root_tmpl = -1, max_tmpl = -1;

/* the parts every mode makes fresh: /tmp /run /dev... proc + masks, sysfs + mask */
static void fresh_parts(int root, int null_tree, int empty, int dev_clones[6], int ro_root)
{
    if (!ro_root) {
        attach(root, newfs("tmpfs", "mode", "1777", NULL, NULL, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV), "/tmp",
               0);
        attach(root, newfs("tmpfs", "mode", "0755", NULL, NULL, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV), "/run",
               0);
    } else {
        attach(root, newfs("tmpfs", "mode", "1777", NULL, NULL, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV), "/tmp",
               0);
        attach(root, newfs("tmpfs", "mode", "0755", NULL, NULL, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV), "/run",
               0);
    }
    attach(root,
           newfs("proc", NULL, NULL, NULL, NULL, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC),
           "/proc", 0);
    attach(root,
           newfs("tmpfs", "mode", "0755", "size", "65536k",
                 MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC),
           "/dev", 0);
    masks_into(root, null_tree, empty, proc_masks, NSE(proc_masks), 0);
    for (size_t i = 0; i < NSE(proc_ro); i++)
        ro_rebind(root, proc_ro[i]);
    char p[64];
    for (int i = 0; i < 6; i++) {
        snprintf(p, sizeof p, "/dev/%s", devs[i]);
        attach(root, dev_clones[i], p, 1);
    }
    attach(root,
           newfs("devpts", "newinstance", NULL, "ptmxmode", "0666", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC),
           "/dev/pts", 0);
    symlink_in(root, "/dev", "pts/ptmx", "ptmx");
    attach(root,
           newfs("tmpfs", "mode", "1777", "size", "65536k",
                 MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC),
           "/dev/shm", 0);
    attach(root,
           newfs("mqueue", NULL, NULL, NULL, NULL, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC),
           "/dev/mqueue", 0);
    symlink_in(root, "/dev", "/proc/self/fd", "fd");
    symlink_in(root, "/dev", "/proc/self/fd/0", "stdin");
    symlink_in(root, "/dev", "/proc/self/fd/1", "stdout");
    symlink_in(root, "/dev", "/proc/self/fd/2", "stderr");
    attach(root,
           newfs("sysfs", NULL, NULL, NULL, NULL,
                 MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC),
           "/sys", 0);
    mask(root, empty, "/sys/firmware");
}

static void build(enum mode m, int given)
{
    int usr = -1, etc = -1, py = -1, dev[6];
    int null_tree = clone_tree("/dev/null", 0, MOUNT_ATTR_RDONLY);
    if (m != TMPL_RO) {
        usr = clone_tree("/usr", AT_RECURSIVE, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
        if (m == TODAY)
            etc = clone_tree("/etc", AT_RECURSIVE, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
        py = clone_tree(PY, AT_RECURSIVE, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    }
    for (int i = 0; i < 6; i++) {
        char p[32];
        snprintf(p, sizeof p, "/dev/%s", devs[i]);
        dev[i] = clone_tree(p, 0, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC);
    }
    /* as sbx-init: the host's paths are cloned as the creating user, then the
     * identity switches to the container's root */
    CK(setresgid(0, 0, 0));
    CK(setresuid(0, 0, 0));
    /* scratch base, as today */
    int s = newfs("tmpfs", "size", "64k", "mode", "0755", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    CK(sys_move(s, "", AT_FDCWD, "/tmp", MOVE_MOUNT_F_EMPTY_PATH));
    close(s);
    CK(chdir("/tmp"));
    CK(mkdir("newroot", 0755));
    int empty = newfs("tmpfs", "size", "0", "mode", "0555", MOUNT_ATTR_RDONLY);
    int root;
    if (m == TMPL_RO) {
        CK(sys_move(given, "", AT_FDCWD, "newroot", MOVE_MOUNT_F_EMPTY_PATH));
        close(given);
        CK(root = open("newroot", O_PATH | O_DIRECTORY | O_CLOEXEC));
    } else {
        int r = newfs("tmpfs", "mode", "0755", NULL, NULL, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
        CK(sys_move(r, "", AT_FDCWD, "newroot", MOVE_MOUNT_F_EMPTY_PATH));
        close(r);
        CK(root = open("newroot", O_PATH | O_DIRECTORY | O_CLOEXEC));
        attach(root, usr, "/usr", 0);
        symlink_in(root, "/", "usr/bin", "bin");
        symlink_in(root, "/", "usr/sbin", "sbin");
        symlink_in(root, "/", "usr/lib", "lib");
        symlink_in(root, "/", "usr/lib64", "lib64");
        if (m == TODAY) {
            attach(root, etc, "/etc", 0);
            masks_into(root, null_tree, empty, etc_masks, NSE(etc_masks), 0);
        } else {
            attach(root, given, "/etc", 0);
        }
        CK(mkdirat(root, "root", 0755));
        CK(mkdirat(root, "root/.pyenv", 0755));
        CK(mkdirat(root, "root/.pyenv/versions", 0755));
        attach(root, py, PY, 0);
    }
    fresh_parts(root, null_tree, empty, dev, m == TMPL_RO);
    close(open("null-tree", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0));
    CK(sys_move(null_tree, "", AT_FDCWD, "null-tree", MOVE_MOUNT_F_EMPTY_PATH));
    CK(mkdir("empty-dir", 0700));
    CK(sys_move(empty, "", AT_FDCWD, "empty-dir", MOVE_MOUNT_F_EMPTY_PATH));
    close(null_tree);
    close(empty);
    close(root);
    CK(chdir("newroot"));
    CK(syscall(SYS_pivot_root, ".", "."));
    CK(umount2(".", MNT_DETACH));
    CK(chdir("/"));
}

/* TMPL_MAX: the template also holds /dev (read-only: its device binds and
 * symlinks), the masks' sources are its own /dev/null and /etc/ssh mask,
 * and it is attached on /tmp: no scratch base, nothing to park.  Fresh:
 * /tmp, /run, devpts, /dev/shm, mqueue, proc (+ 8 ops), sysfs (+ 1). */
static void build_max(int given)
{
    CK(sys_move(given, "", AT_FDCWD, "/tmp", MOVE_MOUNT_F_EMPTY_PATH));
    close(given);
    CK(setresgid(0, 0, 0));
    CK(setresuid(0, 0, 0));
    int root;
    CK(root = open("/tmp", O_PATH | O_DIRECTORY | O_CLOEXEC));
    int null_tree = sys_open_tree(root, "dev/null", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    CK(null_tree);
    int empty = sys_open_tree(root, "etc/ssh", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    CK(empty);
    attach(root, newfs("tmpfs", "mode", "1777", NULL, NULL, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV), "/tmp", 0);
    attach(root, newfs("tmpfs", "mode", "0755", NULL, NULL, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV), "/run", 0);
    attach(root,
           newfs("proc", NULL, NULL, NULL, NULL, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC),
           "/proc", 0);
    masks_into(root, null_tree, empty, proc_masks, NSE(proc_masks), 0);
    for (size_t i = 0; i < NSE(proc_ro); i++)
        ro_rebind(root, proc_ro[i]);
    attach(root,
           newfs("devpts", "newinstance", NULL, "ptmxmode", "0666", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC),
           "/dev/pts", 0);
    attach(root,
           newfs("tmpfs", "mode", "1777", "size", "65536k",
                 MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC),
           "/dev/shm", 0);
    attach(root,
           newfs("mqueue", NULL, NULL, NULL, NULL, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC),
           "/dev/mqueue", 0);
    attach(root,
           newfs("sysfs", NULL, NULL, NULL, NULL,
                 MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC),
           "/sys", 0);
    mask(root, empty, "/sys/firmware");
    close(null_tree);
    close(empty);
    close(root);
    CK(chdir("/tmp"));
    CK(syscall(SYS_pivot_root, ".", "."));
    CK(umount2(".", MNT_DETACH));
    CK(chdir("/"));
}

static void make_max_template(void)
{
    int r = sys_open_tree(root_tmpl, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
    CK(r);
    int dev = newfs("tmpfs", "mode", "0755", "size", "65536k",
                    MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
    const char *dirs[] = {"pts", "shm", "mqueue"};
    for (size_t i = 0; i < NSE(dirs); i++)
        CK(mkdirat(dev, dirs[i], 0755));
    CK(symlinkat("pts/ptmx", dev, "ptmx"));
    CK(symlinkat("/proc/self/fd", dev, "fd"));
    CK(symlinkat("/proc/self/fd/0", dev, "stdin"));
    CK(symlinkat("/proc/self/fd/1", dev, "stdout"));
    CK(symlinkat("/proc/self/fd/2", dev, "stderr"));
    for (int i = 0; i < 6; i++) {
        char p[32];
        snprintf(p, sizeof p, "/dev/%s", devs[i]);
        attach(dev, clone_tree(p, 0, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC), p + 4, 1);
    }
    struct mount_attr a = {.attr_set = MOUNT_ATTR_RDONLY};
    CK(sys_setattr(dev, "", AT_EMPTY_PATH, &a));
    attach(r, dev, "/dev", 0);
    max_tmpl = r;
}

/* the host's templates, made once in the host's mount namespace */
static void make_templates(void)
{
    etc_tmpl = clone_tree("/etc", AT_RECURSIVE, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    /* masks inside a detached tree: move_mount onto a detached tree (6.15+) */
    int null_tree = clone_tree("/dev/null", 0, MOUNT_ATTR_RDONLY);
    int empty = newfs("tmpfs", "size", "0", "mode", "0555", MOUNT_ATTR_RDONLY);
    masks_into(etc_tmpl, null_tree, empty, etc_masks, NSE(etc_masks), 4); /* paths resolve in the tree */
    int r = newfs("tmpfs", "mode", "0755", NULL, NULL, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    const char *dirs[] = {"usr",
                          "etc",
                          "tmp",
                          "run",
                          "proc",
                          "dev",
                          "sys",
                          "root",
                          "root/.pyenv",
                          "root/.pyenv/versions",
                          "root/.pyenv/versions/3.11.7"};
    for (size_t i = 0; i < NSE(dirs); i++)
        CK(mkdirat(r, dirs[i], 0755));
    CK(symlinkat("usr/bin", r, "bin"));
    CK(symlinkat("usr/sbin", r, "sbin"));
    CK(symlinkat("usr/lib", r, "lib"));
    CK(symlinkat("usr/lib64", r, "lib64"));
    attach(r, clone_tree("/usr", AT_RECURSIVE, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV),
           "/usr", 0);
    attach(r, sys_open_tree(etc_tmpl, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE),
           "/etc", 0);
    attach(r, clone_tree(PY, AT_RECURSIVE, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV), PY, 0);
    struct mount_attr a = {.attr_set = MOUNT_ATTR_RDONLY};
    CK(sys_setattr(r, "", AT_EMPTY_PATH, &a));
    root_tmpl = r;
}

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}
static double wall_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

struct arg {
    enum mode m;
    int given, go[2], out[2], probe;
};
static char stack[1 << 20];
static int child(void *p)
{
    struct arg *a = p;
    char c;
    close(a->go[1]);
    if (read(a->go[0], &c, 1) != 1)
        _exit(98);
    if (a->probe) { /* can the container clone the host's template itself? */
        int t = sys_open_tree(root_tmpl, "", OPEN_TREE_CLONE | AT_EMPTY_PATH | AT_RECURSIVE);
        int e = errno;
        int t2 = sys_open_tree(etc_tmpl, "", OPEN_TREE_CLONE | AT_EMPTY_PATH | AT_RECURSIVE);
        fprintf(
            stderr,
            "probe: the container clones the host's fsmount-made template: %d %s; its open_tree-made /etc "
            "template: %d %s\n",
            t, t < 0 ? strerror(e) : "ok", t2, t2 < 0 ? strerror(errno) : "ok");
        double r[2] = {t, e};
        if (write(a->out[1], r, sizeof r) < 0)
            _exit(97);
        _exit(0);
    }
    double c0 = cpu_now(), w0 = wall_now();
    if (a->m == TMPL_MAX)
        build_max(a->given);
    else
        build(a->m, a->given);
    double r[2] = {cpu_now() - c0, wall_now() - w0};
    if (a->probe == 0 && getenv("CHECK_LOCK")) { /* are the template's masks locked in the container? */
        int n = 0, ch;
        FILE *mi = fopen("/proc/self/mountinfo", "r");
        while (mi && (ch = fgetc(mi)) != EOF)
            n += ch == '\n';
        struct stat st_shadow, st_lo;
        int null_ok = open("/dev/null", O_WRONLY) >= 0, lo_ok = stat("/sys/class/net/lo", &st_lo) == 0;
        stat("/etc/shadow", &st_shadow);
        fprintf(stderr,
                "mode %d: %d mounts; /dev/null opens: %d; /sys/class/net/lo: %d; /etc/shadow size %ld\n",
                a->m, n, null_ok, lo_ok, (long)st_shadow.st_size);
        int u = umount2("/etc/shadow", MNT_DETACH);
        fprintf(stderr, "mode %d: umount2 of the /etc/shadow mask in the container: %d %s\n", a->m, u,
                u < 0 ? strerror(errno) : "unmounted");
        struct mount_attr rw = {.attr_clr = MOUNT_ATTR_RDONLY};
        u = sys_setattr(AT_FDCWD, "/usr", 0, &rw);
        fprintf(stderr, "mode %d: mount_setattr clearing RDONLY of /usr in the container: %d %s\n", a->m, u,
                u < 0 ? strerror(errno) : "now read-write");
    }
    if (write(a->out[1], r, sizeof r) < 0)
        _exit(97);
    _exit(0);
}

static void map(pid_t pid)
{
    char p[64];
    const char *files[] = {"uid_map", "setgroups", "gid_map"},
               *text[] = {"0 100000 65536", "deny", "0 100000 65536"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "/proc/%d/%s", pid, files[i]);
        int fd = open(p, O_WRONLY);
        CK(fd);
        CK(write(fd, text[i], strlen(text[i])));
        close(fd);
    }
}

static int run(enum mode m, int probe, double out[4])
{
    struct arg a = {.m = m, .probe = probe, .given = -1};
    double h0 = cpu_now();
    if (m == TMPL_RO)
        a.given =
            sys_open_tree(root_tmpl, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
    else if (m == TMPL_MAX)
        a.given =
            sys_open_tree(max_tmpl, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
    else if (m == TMPL_ETC)
        a.given =
            sys_open_tree(etc_tmpl, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
    double host = cpu_now() - h0;
    CK(pipe2(a.go, O_CLOEXEC));
    CK(pipe2(a.out, O_CLOEXEC));
    pid_t pid = clone(child, stack + sizeof stack,
                      CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWNET |
                          CLONE_NEWUTS | SIGCHLD,
                      &a);
    CK(pid);
    if (a.given >= 0)
        close(a.given);
    map(pid);
    close(a.go[0]);
    CK(write(a.go[1], "x", 1));
    close(a.go[1]);
    close(a.out[1]);
    double r[2] = {-1, -1};
    ssize_t n = read(a.out[0], r, sizeof r);
    close(a.out[0]);
    int st;
    struct rusage ru;
    wait4(pid, &st, 0, &ru);
    if (n != sizeof r || !WIFEXITED(st) || WEXITSTATUS(st))
        return fprintf(stderr, "mode %d failed: status %x\n", m, st), -1;
    out[0] = r[0];
    out[1] = r[1];
    out[2] = host;
    out[3] = ru.ru_utime.tv_sec * 1e6 + ru.ru_utime.tv_usec + ru.ru_stime.tv_sec * 1e6 + ru.ru_stime.tv_usec;
    return 0;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double med(double *v, int n)
{
    qsort(v, n, sizeof *v, cmp);
    return v[n / 2];
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 200;
    /* a private mount namespace for the host's templates (the machine's tree untouched) */
    CK(unshare(CLONE_NEWNS));
    CK(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL));
    make_templates();
    make_max_template();
    double probe[4];
    struct arg a;
    (void)a;
    {
        double r[4];
        int pr = run(TMPL_RO, 1, r);
        probe[0] = r[0];
        probe[1] = r[1];
        printf("probe: container's own open_tree(OPEN_TREE_CLONE|AT_RECURSIVE) of the host's template: rc "
               "%.0f errno "
               "%.0f (%s) [%d]\n",
               probe[0], probe[1], probe[0] < 0 ? strerror((int)probe[1]) : "ok", pr);
    }
    setenv("CHECK_LOCK", "1", 1);
    for (int m = 0; m < NMODES; m++) {
        double r[4];
        run(m, 0, r);
    }
    unsetenv("CHECK_LOCK");
    const char *names[] = {"today", "tmpl-etc", "tmpl-ro", "tmpl-max"};
    double *v[NMODES][4];
    for (int m = 0; m < NMODES; m++)
        for (int k = 0; k < 4; k++)
            v[m][k] = calloc(rounds, sizeof(double));
    for (int i = 0; i < rounds; i++)
        for (int m = 0; m < NMODES; m++) {
            double r[4];
            if (run((i + m) % NMODES, 0, r) < 0)
                return 1;
            for (int k = 0; k < 4; k++)
                v[(i + m) % NMODES][k][i] = r[k];
        }
    printf("%-9s %12s %12s %14s %16s %12s\n", "mode", "build cpu", "build wall", "host clone cpu",
           "build+host cpu", "child total");
    for (int m = 0; m < NMODES; m++) {
        double *sum = calloc(rounds, sizeof(double));
        for (int i = 0; i < rounds; i++)
            sum[i] = v[m][0][i] + v[m][2][i];
        printf("%-9s %10.0fus %10.0fus %12.0fus %14.0fus %10.0fus\n", names[m], med(v[m][0], rounds),
               med(v[m][1], rounds), med(v[m][2], rounds), med(sum, rounds), med(v[m][3], rounds));
    }
    return 0;
}
