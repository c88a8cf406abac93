/* The set-up sequence, run by sbx-init right after the spawn child exec'd
 * it, before it becomes the container's init.  It is a small static
 * program of its own (no copy of the host process), but keeps the child's
 * rules: no allocation, a failure ends it through sbx_report_fail() with
 * (step, errno, op index) on SBX_FD_ERROR.
 *
 * Order: receive the plan; what needs only the new user namespace's
 * capabilities (network ns, hostname, lo, private propagation, cloning the
 * host trees, with the creator's ids) runs while the parent writes the id
 * maps; then the go message; become root; build the root; pivot. */
#include "setup.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/keyctl.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fdmsg.h"
#include "mounts.h"
#include "plan.h"
#include "report.h"
#include "syscalls.h"

#define CHECK(step, expr)                                     \
    do {                                                      \
        if ((expr) < 0)                                       \
            sbx_report_fail(SBX_FD_ERROR, (step), errno, -1); \
    } while (0)

static const struct sbx_plan *plan;
static char plan_buf[SBX_MAX_REQUEST] __attribute__((aligned(8))); /* the init keeps its filter */
static struct sbx_mount_op ops[SBX_MAX_MOUNTS];
static int tree_fds[SBX_MAX_MOUNTS];

/* Tests force each step to fail once through plan->fault_step. */
static void fault_point(int step, int index)
{
    if (plan->fault_errno && plan->fault_step == step)
        sbx_report_fail(SBX_FD_ERROR, step, plan->fault_errno, index);
}

static void check_neg(int step, int r, int index)
{
    if (r < 0)
        sbx_report_fail(SBX_FD_ERROR, step, -r, index);
}

/* Receive one message of the given type on the control socket.  EOF means
 * the parent gave up: leave quietly (it reads nothing more from us). */
static size_t receive(uint32_t type, char *buf, size_t size)
{
    ssize_t n;
    do {
        n = recv(SBX_FD_CONTROL, buf, size, 0);
    } while (n < 0 && errno == EINTR);
    if (n == 0)
        _exit(127);
    if (n < 0)
        sbx_report_fail(SBX_FD_ERROR, SBX_STEP_SYNC, errno, -1);
    if ((size_t)n < sizeof(uint32_t) || *(uint32_t *)buf != type)
        sbx_report_fail(SBX_FD_ERROR, SBX_STEP_SYNC, EBADMSG, -1);
    return (size_t)n;
}

/* A new network namespace takes ~0.5 ms to create: a thread creates it
 * while the main thread builds the root, which joins it before the first
 * op that needs it (sysfs) or at the end. */
struct netns_job {
    pthread_t thread;
    int started;
    int fd; /* the new namespace, or -1 */
    int err;
    int proc_fd; /* the host's /proc: the main thread may pivot meanwhile */
    int pinned; /* the main thread's CPUs are restricted until the join */
    cpu_set_t cpus;
};

static struct netns_job netns_job = {.fd = -1};

static void *netns_thread(void *arg)
{
    struct netns_job *job = arg;
    if (unshare(CLONE_NEWNET) < 0) {
        job->err = errno;
        return NULL;
    }
    job->fd = openat(job->proc_fd, "thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    job->err = job->fd < 0 ? errno : 0;
    return NULL;
}

/* Where the two threads run (traced with ftrace): left to the scheduler,
 * the new thread waited on the main thread's CPU behind the mount work, or
 * took the CPU of the host process, which then wrote the id maps only once
 * the namespace was made (namespace creation is not preempted).  So the
 * thread keeps this CPU, and the main thread, which first waits for the
 * host's go, moves to the others until it joins the namespace. */
static void split_cpus(pthread_t thread)
{
    cpu_set_t one, rest;
    int cpu = sched_getcpu();
    if (cpu < 0 || sched_getaffinity(0, sizeof(rest), &rest) < 0 || CPU_COUNT(&rest) < 2)
        return;
    netns_job.cpus = rest;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    CPU_CLR(cpu, &rest);
    if (pthread_setaffinity_np(thread, sizeof(one), &one) == 0 &&
        sched_setaffinity(0, sizeof(rest), &rest) == 0)
        netns_job.pinned = 1; /* best effort: only speed depends on it */
}

static void netns_start(void)
{
    netns_job.fd = -1;
    netns_job.proc_fd = open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (netns_job.proc_fd < 0)
        sbx_report_fail(SBX_FD_ERROR, SBX_STEP_NETWORK, errno, -1);
    int r = pthread_create(&netns_job.thread, NULL, netns_thread, &netns_job);
    if (r != 0)
        sbx_report_fail(SBX_FD_ERROR, SBX_STEP_NETWORK, r, -1);
    netns_job.started = 1;
    split_cpus(netns_job.thread);
}

static void loopback_up(void);

/* Wait for the thread's network namespace (once). */
static void netns_wait(void)
{
    if (!netns_job.started)
        return;
    netns_job.started = 0;
    pthread_join(netns_job.thread, NULL);
    close(netns_job.proc_fd);
    if (netns_job.pinned) /* commands inherit the main thread's CPUs */
        sched_setaffinity(0, sizeof(netns_job.cpus), &netns_job.cpus);
    if (netns_job.err)
        sbx_report_fail(SBX_FD_ERROR, SBX_STEP_NETWORK, netns_job.err, -1);
}

/* Give the parent the new network namespace (it connects it before go). */
static void netns_send(void)
{
    netns_wait();
    uint32_t type = SBX_MSG_NETNS;
    struct iovec iov = {.iov_base = &type, .iov_len = sizeof(type)};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof(control.buf)};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &netns_job.fd, sizeof(int));
    CHECK(SBX_STEP_NETWORK, sendmsg(SBX_FD_CONTROL, &msg, MSG_NOSIGNAL));
}

/* Enter the thread's network namespace and bring lo up (once). */
static void netns_join(const struct sbx_plan *p)
{
    if (netns_job.fd < 0 && !netns_job.started)
        return;
    netns_wait();
    CHECK(SBX_STEP_NETWORK, setns(netns_job.fd, CLONE_NEWNET));
    close(netns_job.fd);
    netns_job.fd = -1;
    if (p->flags & SBX_PLAN_LOOPBACK_UP)
        loopback_up();
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

/* First pass, with the creator's ids: clone every host tree the root
 * needs.  Missing optional sources are recorded as -1. */
static int clone_sources(const struct sbx_plan *p)
{
    int null_tree = -1;
    for (size_t i = 0; i < p->n_mounts; i++) {
        if (p->mounts[i].kind == SBX_MNT_MASK && null_tree >= 0) {
            p->tree_fds[i] = null_tree; /* shared, not consumed */
            continue;
        }
        int fd = sbx_clone_source(&p->mounts[i]);
        if (p->mounts[i].kind == SBX_MNT_MASK)
            null_tree = fd;
        if (fd == -ENOENT && (p->mounts[i].flags & SBX_MF_OPTIONAL))
            fd = -1;
        else if (fd < -1)
            sbx_report_fail(SBX_FD_ERROR, SBX_STEP_MOUNT, -fd, (int)i);
        p->tree_fds[i] = fd;
    }
    if (!p->rootfs)
        return -1;
    int tree = sbx_clone_rootfs(p->rootfs, (p->flags & SBX_PLAN_READ_ONLY_ROOT) != 0);
    check_neg(SBX_STEP_ROOT, tree, -1);
    return tree;
}

/* The go message, with the idmapped trees of the IDMAP binds when the
 * host made them (as root; see idmap.c): they replace the plain clones. */
static void receive_go(const struct sbx_plan *p)
{
    char go[16];
    int fds[SBX_RECV_MAX_FDS], nfds, flags;
    ssize_t n;
    do {
        n = sbx_recv_with_fds(SBX_FD_CONTROL, go, sizeof(go), fds, SBX_RECV_MAX_FDS, &nfds, &flags);
    } while (n < 0 && errno == EINTR);
    if (n == 0)
        _exit(127);
    if (n < 0)
        sbx_report_fail(SBX_FD_ERROR, SBX_STEP_SYNC, errno, -1);
    if ((size_t)n < sizeof(uint32_t) || *(uint32_t *)go != SBX_MSG_GO || (flags & MSG_CTRUNC))
        sbx_report_fail(SBX_FD_ERROR, SBX_STEP_SYNC, EBADMSG, -1);
    int used = 0;
    for (size_t i = 0; i < p->n_mounts && nfds > 0; i++) {
        if (!(p->mounts[i].flags & SBX_MF_IDMAP) || p->mounts[i].kind != SBX_MNT_BIND)
            continue;
        if (used == nfds)
            sbx_report_fail(SBX_FD_ERROR, SBX_STEP_SYNC, EBADMSG, (int)i);
        if (p->tree_fds[i] >= 0)
            close(p->tree_fds[i]);
        p->tree_fds[i] = fds[used++];
    }
    if (used != nfds)
        sbx_report_fail(SBX_FD_ERROR, SBX_STEP_SYNC, EBADMSG, -1);
}

/* Become root of the new user namespace.  Host trees are cloned before
 * this, with the creator's ids (host root can traverse a 0700 /root to
 * bind the interpreter; the container's mapped root could not); new
 * inodes in our tmpfs need a mapped id, so the root is built after. */
static void become_root(const struct sbx_plan *p)
{
    fault_point(SBX_STEP_IDENTITY, -1);
    if (!(p->flags & SBX_PLAN_BECOME_ROOT))
        return;
    /* Raw syscalls: the libc wrappers change the credentials of every
     * thread, waiting for the network-namespace thread to leave the kernel
     * (~0.5 ms); only this thread needs them (the other one ends soon). */
    if (p->flags & SBX_PLAN_SET_GROUPS)
        CHECK(SBX_STEP_IDENTITY, syscall(SYS_setgroups, 0, NULL));
    CHECK(SBX_STEP_IDENTITY, syscall(SYS_setresgid, 0, 0, 0));
    CHECK(SBX_STEP_IDENTITY, syscall(SYS_setresuid, 0, 0, 0));
}

/* A session keyring of the container's own, as runc gives each container:
 * the one inherited from the host process is possessed by every process
 * under it, so any command could read the host's keys (keyctl) whatever
 * its uid, unless a filter refused keyctl.  After become_root, so that it
 * belongs to the container's root; anonymous, so no container can join
 * another's.  It counts against the key quota of the host uid that root
 * maps to (/proc/sys/kernel/keys/maxkeys; EDQUOT names step KEYRING), and
 * is freed when the container's last process ends. */
static void join_fresh_keyring(void)
{
    fault_point(SBX_STEP_KEYRING, -1);
    CHECK(SBX_STEP_KEYRING, syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL));
}

/* An image root: the LOWER ops (their tree fds are the layer dirs) and
 * the OVERLAY op after them.  Returns the overlay tree, or rootfs_tree
 * when the plan has no overlay. */
static int upper_fd = -1;

static int overlay_root(const struct sbx_plan *p, int rootfs_tree)
{
    size_t n = 0;
    while (n < p->n_mounts && p->mounts[n].kind == SBX_MNT_LOWER)
        n++;
    if (n == p->n_mounts || p->mounts[n].kind != SBX_MNT_OVERLAY)
        return rootfs_tree;
    fault_point(SBX_STEP_MOUNT, (int)n);
    int tree = sbx_make_overlay(p->tree_fds, n, p->tree_fds[n], p->mounts[n].data, &upper_fd);
    check_neg(SBX_STEP_MOUNT, tree, (int)n);
    return tree;
}

static int applied_already(int kind)
{
    return kind == SBX_MNT_LOWER || kind == SBX_MNT_OVERLAY;
}

/* Second pass, as the container's root: the scratch base, the root, then
 * every op in plan order. */
static void build_root(const struct sbx_plan *p, int rootfs_tree)
{
    fault_point(SBX_STEP_BASE, -1);
    check_neg(SBX_STEP_BASE, sbx_enter_base(p->base_dir), -1);
    rootfs_tree = overlay_root(p, rootfs_tree);
    fault_point(SBX_STEP_ROOT, -1);
    int rootfd = sbx_make_root(rootfs_tree);
    check_neg(SBX_STEP_ROOT, rootfd, -1);
    for (size_t i = 0; i < p->n_mounts; i++) {
        fault_point(SBX_STEP_MOUNT, (int)i);
        if (p->mounts[i].kind == SBX_MNT_SYSFS)
            netns_join(p); /* sysfs shows the mounter's network namespace */
        if ((p->flags & SBX_PLAN_MOUNT_ORDER) && p->mounts[i].kind == SBX_MNT_BIND && p->tree_fds[i] >= 0) {
            int again = sbx_clone_again(p->tree_fds[i], p->mounts[i].flags, i);
            check_neg(SBX_STEP_MOUNT, again, (int)i);
            p->tree_fds[i] = again; /* (the first is parked, its fd closed) */
        }
        int r = ((p->tree_fds[i] == -1 && p->mounts[i].kind == SBX_MNT_BIND) ||
                 applied_already(p->mounts[i].kind))
                    ? 0
                    : sbx_apply_mount(rootfd, &p->mounts[i], p->tree_fds[i]);
        check_neg(SBX_STEP_MOUNT, r, (int)i);
    }
    int null_tree = -1; /* shared by every file mask */
    for (size_t i = 0; i < p->n_mounts && null_tree < 0; i++)
        if (p->mounts[i].kind == SBX_MNT_MASK)
            null_tree = p->tree_fds[i];
    sbx_park_mask_trees(null_tree);
    if (p->flags & SBX_PLAN_READ_ONLY_ROOT)
        check_neg(SBX_STEP_ROOT, sbx_root_read_only(rootfd), -1);
    close(rootfd);
}

/* The root's propagation (rootfsPropagation): only after the pivot, which
 * refuses a shared root (pivot_root(".", ".") puts the old root on it). */
static void set_root_propagation(const struct sbx_plan *p)
{
    if (!p->root_propagation)
        return;
    int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    CHECK(SBX_STEP_ROOT, root);
    check_neg(SBX_STEP_ROOT, sbx_propagate(root, p->root_propagation), -1);
    close(root);
}

/* setns() into the namespaces the plan names by path, replacing the new
 * ones the clone made (a mount namespace joined is set up as a new one). */
static void join_namespaces(const struct sbx_plan *p)
{
    static const int types[SBX_N_JOIN] = {CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWNS,
                                          CLONE_NEWCGROUP};
    for (int i = 0; i < SBX_N_JOIN; i++) {
        if (!p->join[i])
            continue;
        int fd = open(p->join[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0 || setns(fd, types[i]) < 0)
            sbx_report_fail(SBX_FD_ERROR, SBX_STEP_JOIN, errno, i);
        close(fd);
    }
}

/* Landlock's signal scope (ABI 6, Linux 6.12): the init and every process
 * it forks may signal only processes of this domain, and may trace (ptrace,
 * /proc/PID/mem, environ, root) only those too, as every Landlock domain.
 * Its own struct: older <linux/landlock.h> have no `scoped`. */
struct scope_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
};
#define SCOPE_SIGNAL (1ULL << 1) /* LANDLOCK_SCOPE_SIGNAL */

static void scope_signals(const struct sbx_plan *p)
{
    fault_point(SBX_STEP_SCOPE, -1);
    if (!(p->flags & SBX_PLAN_SCOPE))
        return;
    struct scope_ruleset_attr attr = {.scoped = SCOPE_SIGNAL};
    long fd = syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0);
    CHECK(SBX_STEP_SCOPE, fd);
    CHECK(SBX_STEP_SCOPE, syscall(SYS_landlock_restrict_self, (int)fd, 0));
    close((int)fd);
}

const struct sbx_plan *sbx_setup(int early_netns)
{
    static struct sbx_plan parsed;
    if (early_netns)
        netns_start(); /* before even the plan: it is the longest step */
    size_t len = receive(SBX_MSG_PLAN, plan_buf, sizeof(plan_buf));
    int r = sbx_plan_parse(plan_buf, len, &parsed, ops, tree_fds, SBX_MAX_MOUNTS);
    if (r < 0)
        sbx_report_fail(SBX_FD_ERROR, SBX_STEP_SYNC, -r, -1);
    plan = &parsed;
    const struct sbx_plan *p = plan;
    join_namespaces(p); /* single-threaded still (the network thread is not
                         * started early when the plan joins any) */
    fault_point(SBX_STEP_NETWORK, -1);
    if ((p->unshare_flags & CLONE_NEWNET) && !netns_job.started)
        netns_start();
    fault_point(SBX_STEP_HOSTNAME, -1);
    if (p->hostname)
        CHECK(SBX_STEP_HOSTNAME, sethostname(p->hostname, strnlen(p->hostname, 64)));
    int has_mntns = (p->flags & SBX_PLAN_NEW_MNTNS) != 0;
    int rootfs_tree = -1;
    if (has_mntns) {
        fault_point(SBX_STEP_PROPAGATION, -1);
        /* In a new user namespace the copied mounts are already slaves that
         * cannot propagate to the host (and every tree we clone is made
         * private); as real root they may be shared: make them private. */
        if (!(p->flags & SBX_PLAN_BECOME_ROOT))
            CHECK(SBX_STEP_PROPAGATION, mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL));
        rootfs_tree = clone_sources(p);
    }
    if (p->flags & SBX_PLAN_SEND_NETNS)
        netns_send();
    receive_go(p);
    fault_point(SBX_STEP_SYNC, -1);
    become_root(p);
    join_fresh_keyring();
    if (has_mntns) {
        build_root(p, rootfs_tree);
        fault_point(SBX_STEP_PIVOT, -1);
        check_neg(SBX_STEP_PIVOT, sbx_pivot_into_root(), -1);
        set_root_propagation(p);
    }
    netns_join(p);
    scope_signals(p); /* (once the network thread is joined: it applies to this thread alone) */
    /* Only now, single-threaded: growing the fd table of a process with
     * two threads waits for an RCU grace period (~10 ms). */
    if (upper_fd >= 0) {
        CHECK(SBX_STEP_ROOT, dup3(upper_fd, SBX_FD_UPPER, O_CLOEXEC));
        close(upper_fd);
    }
    return p;
}
