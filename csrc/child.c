/* The cloned child: the fixed set-up sequence between clone() and the
 * execveat() of the init.  Runs in a copy of the Python process, so it is
 * async-signal-safe and allocation-free; a failure ends it through
 * sbx_report_fail() with (step, errno, op index). */
#include "child.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include "mounts.h"
#include "report.h"
#include "syscalls.h"

#define CHECK(step, expr)                                     \
    do {                                                      \
        if ((expr) < 0)                                       \
            sbx_report_fail(report_fd, (step), errno, -1);    \
    } while (0)

static int report_fd;
static const struct sbx_plan *plan;

/* Tests force each step to fail once through plan->fault_step. */
static void fault_point(int step, int index)
{
    if (plan->fault_errno && plan->fault_step == step)
        sbx_report_fail(report_fd, step, plan->fault_errno, index);
}

static void wait_for_go(const struct sbx_plan *p)
{
    char go = 0;
    ssize_t n;
    do {
        n = read(p->sync_fd, &go, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1)  /* the parent gave up: it reads nothing more from us */
        _exit(127);
    close(p->sync_fd);
}

/* Become root of the new user namespace.  Host trees are cloned before
 * this, with the creator's ids (host root can traverse a 0700 /root to
 * bind the interpreter; the container's mapped root could not). */
static void become_root(const struct sbx_plan *p)
{
    fault_point(SBX_STEP_IDENTITY, -1);
    if (!p->become_root)
        return;
    if (p->set_groups)
        CHECK(SBX_STEP_IDENTITY, setgroups(0, NULL));
    CHECK(SBX_STEP_IDENTITY, setresgid(0, 0, 0));
    CHECK(SBX_STEP_IDENTITY, setresuid(0, 0, 0));
}

static void loopback_up(void)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    memcpy(ifr.ifr_name, "lo", 3);
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(SBX_STEP_NETWORK, sock);
    CHECK(SBX_STEP_NETWORK, ioctl(sock, SIOCGIFFLAGS, &ifr));
    ifr.ifr_flags |= IFF_UP;
    CHECK(SBX_STEP_NETWORK, ioctl(sock, SIOCSIFFLAGS, &ifr));
    close(sock);
}

static void check_neg(int step, int r, int index)
{
    if (r < 0)
        sbx_report_fail(report_fd, step, -r, index);
}

/* First pass, with the creator's ids: clone every host tree the root
 * needs.  Missing optional sources are recorded as -1. */
static int clone_sources(const struct sbx_plan *p)
{
    for (size_t i = 0; i < p->n_mounts; i++) {
        int fd = sbx_clone_source(&p->mounts[i]);
        if (fd == -ENOENT && (p->mounts[i].flags & SBX_MF_OPTIONAL))
            fd = -1;
        else if (fd < -1)
            sbx_report_fail(report_fd, SBX_STEP_MOUNT, -fd, (int)i);
        p->tree_fds[i] = fd;
    }
    if (!p->rootfs)
        return -1;
    int tree = sbx_clone_rootfs(p->rootfs);
    check_neg(SBX_STEP_ROOT, tree, -1);
    return tree;
}

/* Second pass, as the container's root: the scratch base, the root, then
 * every op in plan order. */
static void build_root(const struct sbx_plan *p, int rootfs_tree)
{
    fault_point(SBX_STEP_BASE, -1);
    check_neg(SBX_STEP_BASE, sbx_enter_base(p->base_dir), -1);
    fault_point(SBX_STEP_ROOT, -1);
    int rootfd = sbx_make_root(rootfs_tree);
    check_neg(SBX_STEP_ROOT, rootfd, -1);
    for (size_t i = 0; i < p->n_mounts; i++) {
        fault_point(SBX_STEP_MOUNT, (int)i);
        int r = (p->tree_fds[i] == -1 && p->mounts[i].kind == SBX_MNT_BIND) ? 0
                : sbx_apply_mount(rootfd, &p->mounts[i], p->tree_fds[i]);
        check_neg(SBX_STEP_MOUNT, r, (int)i);
    }
    if (p->read_only_root)
        check_neg(SBX_STEP_ROOT, sbx_root_read_only(rootfd), -1);
    close(rootfd);
}

/* Put the init's fds in place: 0-2 /dev/null, 3 control, 4 parent pidfd;
 * everything else close-on-exec (the error pipe still reports a failed
 * execveat, the memfd is still there to exec). */
static int place_init_fds(const struct sbx_plan *p, int devnull, int *init_fd)
{
    int control = sbx_fd_high(p->control_fd);
    int pidfd = sbx_fd_high(p->parent_pidfd);
    int memfd = sbx_fd_high(p->init_fd);
    int err = sbx_fd_high(report_fd);
    int null = sbx_fd_high(devnull);
    if (control < 0 || pidfd < 0 || memfd < 0 || err < 0 || null < 0)
        return -EMFILE;
    report_fd = err;
    if (dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0 || dup2(control, 3) < 0 ||
        dup2(pidfd, 4) < 0)
        return -errno;
    if (sbx_close_range(5, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        return -errno;
    *init_fd = memfd;
    return 0;
}

void sbx_child_main(const struct sbx_plan *p)
{
    report_fd = p->error_fd;
    plan = p;
    /* Everything up to the go byte needs only the capabilities the new
     * user namespace gave us, not mapped ids: it runs while the parent
     * writes the id maps. */
    fault_point(SBX_STEP_NETWORK, -1);
    if (p->unshare_flags)
        CHECK(SBX_STEP_NETWORK, unshare((int)p->unshare_flags));
    fault_point(SBX_STEP_HOSTNAME, -1);
    if (p->hostname)
        CHECK(SBX_STEP_HOSTNAME, sethostname(p->hostname, strnlen(p->hostname, 64)));
    if (p->loopback_up)
        loopback_up();
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    CHECK(SBX_STEP_INIT_EXEC, devnull);
    int has_mntns = (p->clone_flags & CLONE_NEWNS) != 0;
    int rootfs_tree = -1;
    if (has_mntns) {
        fault_point(SBX_STEP_PROPAGATION, -1);
        CHECK(SBX_STEP_PROPAGATION, mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL));
        rootfs_tree = clone_sources(p);
    }
    wait_for_go(p);
    fault_point(SBX_STEP_SYNC, -1);
    /* New inodes in our tmpfs need an id mapped in the user ns: from here
     * on the child is the container's root. */
    become_root(p);
    if (has_mntns) {
        build_root(p, rootfs_tree);
        fault_point(SBX_STEP_PIVOT, -1);
        check_neg(SBX_STEP_PIVOT, sbx_pivot_into_root(), -1);
    }
    int init_fd = -1;
    fault_point(SBX_STEP_INIT_EXEC, -1);
    check_neg(SBX_STEP_INIT_EXEC, place_init_fds(p, devnull, &init_fd), -1);
    sbx_execveat(init_fd, "", p->init_argv, p->init_envp, AT_EMPTY_PATH);
    sbx_report_fail(report_fd, SBX_STEP_INIT_EXEC, errno, -1);
}
