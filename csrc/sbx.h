/* The ABI shared by the C files and Python, which reads it through
 * native.cdef (cffi checks the message layouts against this header when it
 * builds).
 *
 * Python sends the set-up plan to sbx-init as a PLAN message (struct
 * sbx_plan_hdr, the seccomp filters, struct sbx_mount_rec records, then the
 * strings); sbx-init parses it into a struct sbx_plan that points into the
 * message.  Exec requests travel to the container's init as a flat byte
 * message (struct sbx_exec_hdr + packed strings). */
#ifndef SBX_H
#define SBX_H

#include <stddef.h>
#include <stdint.h>

/* Bump when any struct, enum or message layout below changes. */
#define SBX_NATIVE_VERSION 31

/* Set-up steps, in the order they run.  A failure is reported as
 * (step, errno, op index) and Python names the step back. */
enum sbx_step {
    SBX_STEP_NONE = 0,
    SBX_STEP_CLONE = 1, /* parent: clone3() */
    SBX_STEP_SYNC = 2, /* child: receiving the plan and the go message */
    SBX_STEP_IDENTITY = 3, /* setresgid/setgroups/setresuid in the user ns */
    SBX_STEP_KEYRING = 23, /* a fresh session keyring, owned by the container's root */
    SBX_STEP_HOSTNAME = 4,
    SBX_STEP_NETWORK = 21, /* bring lo up in the new network ns */
    SBX_STEP_CGROUP = 22, /* joining the container's cgroups; index = attach fd */
    SBX_STEP_PROPAGATION = 5,
    SBX_STEP_BASE = 6, /* scratch root that holds newroot and oldroot */
    SBX_STEP_ROOT = 7, /* the container root: tmpfs or rootfs bind */
    SBX_STEP_MOUNT = 8, /* one mount op; index = op index */
    SBX_STEP_PIVOT = 9,
    SBX_STEP_INIT_EXEC = 10, /* execveat() of sbx-init, right after clone */
    SBX_STEP_FORK = 11, /* init: fork() for an exec request */
    SBX_STEP_REQUEST = 12, /* init: malformed exec request */
    SBX_STEP_STDIO = 13,
    SBX_STEP_RLIMIT = 14, /* index = rlimit index in the request */
    SBX_STEP_CHDIR = 15,
    SBX_STEP_USER = 16, /* setgroups/setresgid/setresuid to the command's user */
    SBX_STEP_NO_NEW_PRIVS = 17,
    SBX_STEP_CAPS = 18,
    SBX_STEP_SECCOMP = 19, /* seccomp(SECCOMP_SET_MODE_FILTER), last before execve */
    SBX_STEP_EXEC = 20, /* execve() of the command */
    SBX_STEP_LOCKDOWN = 24, /* the init, set up: capabilities, no_new_privs, its own filter */
    SBX_STEP_TTY = 25, /* init: a pseudo-terminal from /dev/pts/ptmx; child: TIOCSCTTY */
    SBX_STEP_JOIN = 26, /* setns() into a namespace given by path; index = SBX_JOIN_* */
    SBX_STEP_SCOPE = 27, /* a Landlock domain of the container's own (SBX_PLAN_SCOPE) */
};

/* Namespaces the init joins by path (the OCI runtime's linux.namespaces[].path),
 * in this order, right after it received the PLAN; a pid namespace is the
 * spawn's (sbx_spawn_args.pidns_fd). */
enum sbx_join {
    SBX_JOIN_NET = 0,
    SBX_JOIN_IPC = 1,
    SBX_JOIN_UTS = 2,
    SBX_JOIN_MNT = 3,
    SBX_JOIN_CGROUP = 4,
    SBX_N_JOIN = 5,
};

enum sbx_mount_kind {
    SBX_MNT_BIND = 1, /* source: host path; RECURSIVE/RDONLY/FILE flags */
    SBX_MNT_TMPFS = 2, /* data: "size=..,mode=.." fsconfig options */
    SBX_MNT_PROC = 3,
    SBX_MNT_SYSFS = 4,
    SBX_MNT_DEVPTS = 5,
    SBX_MNT_MQUEUE = 6,
    SBX_MNT_MKDIR = 7,
    SBX_MNT_SYMLINK = 8, /* source: link text */
    SBX_MNT_REMOUNT = 9, /* apply RDONLY to the mount already at target */
    SBX_MNT_MASK = 10, /* hide target: /dev/null over a file, empty ro tmpfs over a dir */
    SBX_MNT_LOWER = 11, /* source: an image layer dir (host), opened before become_root */
    SBX_MNT_OVERLAY = 12, /* the root: overlayfs of the LOWER ops before it (top first) and
                           * source/upper + source/work (a host dir), or with no source an
                           * upper dir on a fresh tmpfs (data: its options) */
    SBX_MNT_MKNOD = 13, /* a device node or fifo at target; data: "type,major,minor,mode,uid,gid"
                         * (type c, b or p; the numbers decimal) */
};

#define SBX_MF_RDONLY 0x01u
#define SBX_MF_RECURSIVE 0x02u
#define SBX_MF_OPTIONAL 0x04u /* a missing source or target is skipped */
#define SBX_MF_FILE 0x08u /* target is a file, not a directory */
#define SBX_MF_NOSUID 0x10u
#define SBX_MF_NODEV 0x20u
#define SBX_MF_NOEXEC 0x40u
#define SBX_MF_USER 0x80u /* from the user's mounts: the resolved target is checked */
#define SBX_MF_IDMAP                                                        \
    0x100u /* bind: the GO message may carry its tree, idmapped by the host \
            * to the container's user namespace (sbx_idmapped_tree); one fd \
            * per IDMAP op, in op order, or none (then the plain clone) */
/* Propagation of a mount once attached (the OCI runtime's mount options);
 * without any it stays private.  PROPAGATE_REC: the whole tree (rshared..). */
#define SBX_MF_SHARED 0x200u
#define SBX_MF_SLAVE 0x400u
#define SBX_MF_UNBINDABLE 0x800u
#define SBX_MF_PROPAGATE_REC 0x1000u
/* The fds one GO message carries (SBX_RECV_MAX_FDS): a root daemon idmaps every bind and volume. */
#define SBX_MAX_IDMAPS 32

struct sbx_mount_op {
    int kind;
    unsigned int flags;
    const char *source; /* absolute host path (already under the old root prefix) */
    const char *target; /* absolute path inside the container root */
    const char *data; /* comma separated key=value pairs, or NULL */
};

/* The set-up program's fds, placed by the spawn child before it execs. */
#define SBX_FD_CONTROL 3 /* SOCK_SEQPACKET to the host process */
#define SBX_FD_PARENT 4 /* pidfd of the host process */
#define SBX_FD_ERROR 5 /* set-up failures; closed (EOF) once set up */
#define SBX_FD_LAUNCHER 1001 /* the init's end of the launcher's socket (launcher.c) */
#define SBX_FD_UPPER                                                \
    1000 /* the init keeps an image root's upper dir here: the host \
          * reads it through /proc/PID/fd (commit) */

#define SBX_MAX_ATTACH_FDS 8

/* What the spawn child needs (in the extension, parent side). */
struct sbx_spawn_args {
    uint64_t clone_flags; /* CLONE_NEW* */
    int fds[4]; /* become 0-2 (/dev/null), 3, 4, 5 */
    int init_fd; /* sealed memfd of the sbx-init executable */
    int fault_step; /* tests: fail INIT_EXEC or CGROUP ... */
    int fault_errno; /* ... with this errno */
    uint64_t caps; /* capabilities sbx-init keeps across its exec */
    char *const *argv;
    char *const *envp;
    int cgroup_fd; /* cgroup v2 directory: clone3(CLONE_INTO_CGROUP), or -1 */
    int n_attach; /* cgroup v1 "tasks" files the child writes "0" to */
    int attach_fds[SBX_MAX_ATTACH_FDS];
    int new_cgroupns; /* unshare(CLONE_NEWCGROUP) once in its cgroups */
    int pidns_fd; /* a pid namespace the child starts in (no CLONE_NEWPID then), or -1 */
};

/* The set-up plan, as the set-up program holds it (pointers into the
 * received PLAN message). */
struct sbx_plan {
    uint64_t unshare_flags; /* unshared by the child itself, overlapping the parent's id maps */
    uint32_t flags; /* SBX_PLAN_* */
    int fault_step; /* tests: fail this step ... */
    int fault_errno; /* ... with this errno (0: off) */
    const char *hostname; /* NULL: keep */
    const char *base_dir; /* host dir to mount the scratch tmpfs on */
    const char *rootfs; /* host path to bind as root, or NULL for tmpfs */
    struct sbx_mount_op *mounts;
    size_t n_mounts;
    int *tree_fds; /* n_mounts ints the child fills in */
    const void *filter; /* seccomp BPF (struct sock_filter[]) each command installs */
    uint32_t filter_len; /* in bytes; 0: no filter */
    uint64_t init_caps; /* the init's permitted set once set up (init.c: lock_down) */
    const void *init_filter; /* the init's own filter, inherited by everything it starts */
    uint32_t init_filter_len; /* in bytes; 0: none */
    uint32_t root_propagation; /* SBX_MF_* propagation bits of the root mount */
    const char *join[SBX_N_JOIN]; /* namespace paths to setns() into, or NULL */
    /* SBX_PLAN_CGROUP_LAUNCHER: the filter of the launcher that forks commands
     * into cgroups of their own (the container's, with clone3 allowed; absent:
     * `filter` allows clone3 already) and the one each of its commands adds
     * (clone3 answered as the container's filter answers it): together the
     * container's filter (launcher.c). */
    const void *launcher_filter;
    uint32_t launcher_filter_len;
    const void *clone3_filter;
    uint32_t clone3_filter_len;
    uint32_t max_forkers; /* resident forkers in kept command cgroups (init.c), at most */
};

#define SBX_PLAN_NEW_MNTNS 0x01u
#define SBX_PLAN_BECOME_ROOT 0x02u /* setresuid/gid(0) inside the new user ns */
#define SBX_PLAN_SET_GROUPS 0x04u /* setgroups(0, NULL) is allowed */
#define SBX_PLAN_LOOPBACK_UP 0x08u /* bring lo up (new network ns) */
#define SBX_PLAN_READ_ONLY_ROOT 0x10u
#define SBX_PLAN_LAUNCHER 0x20u /* the filter allows the command set-up: see launcher.c */
/* send the new network ns to the parent (SBX_MSG_NETNS, its fd in SCM_RIGHTS) before
 * waiting for go: the parent moves a veth into it and configures it */
#define SBX_PLAN_SEND_NETNS 0x40u
/* commands with a cgroup of their own are forked by a launcher too (clone3) */
#define SBX_PLAN_CGROUP_LAUNCHER 0x400u
/* the init puts itself (and so every process of the container) in a Landlock
 * domain of its own that scopes signals: in the host's pid namespace its
 * processes share a host uid with other containers' (as root, the default
 * maps), which kill() and ptrace() check alone */
#define SBX_PLAN_SCOPE 0x800u
#define SBX_PLAN_DETACHED                                                    \
    0x80u /* the container outlives its creator (the OCI runtime): fd 4 is a \
           * listening socket whose connections replace the control socket,  \
           * the creator's going away ends nothing, and the init exits with  \
           * its main command's status (128 + signal when killed) */
#define SBX_PLAN_MOUNT_ORDER                                               \
    0x200u /* binds are cloned again when applied, so that the container's \
            * mountinfo lists its mounts in plan order (the OCI runtime's)  */
#define SBX_PLAN_KEEP_PRIVS                                                 \
    0x100u /* the init does not set no_new_privs on itself (an OCI config's \
            * noNewPrivileges: false); it installs its own filter while     \
            * still privileged */

#define SBX_MAX_MOUNTS 1024
#define SBX_NO_STRING 0xffffffffu

/* PLAN message: header, filter_len bytes of seccomp BPF (a multiple of 8,
 * so the records stay aligned), init_filter_len bytes of the init's own
 * BPF (likewise), launcher_filter_len and clone3_filter_len bytes of the
 * cgroup launcher's two filters (likewise), n_mounts records, then the strings they
 * point into (offsets into the string area, SBX_NO_STRING for NULL). */
struct sbx_plan_hdr {
    uint32_t type; /* SBX_MSG_PLAN */
    uint32_t flags;
    uint64_t unshare_flags;
    int32_t fault_step;
    int32_t fault_errno;
    uint32_t hostname;
    uint32_t base_dir;
    uint32_t rootfs;
    uint32_t n_mounts;
    uint32_t strings_len;
    uint32_t filter_len;
    uint64_t init_caps;
    uint32_t init_filter_len;
    uint32_t root_propagation; /* SBX_MF_SHARED/SLAVE/UNBINDABLE/PROPAGATE_REC of the root (else private) */
    /* string offsets of the namespace paths to join, in enum sbx_join's order */
    uint32_t join_net, join_ipc, join_uts, join_mnt, join_cgroup;
    uint32_t launcher_filter_len;
    uint32_t clone3_filter_len;
    uint32_t max_forkers;
};

#define SBX_MAX_FILTER (4096 * 8) /* BPF_MAXINSNS instructions */

struct sbx_mount_rec {
    uint32_t kind;
    uint32_t flags;
    uint32_t source;
    uint32_t target;
    uint32_t data;
};

struct sbx_report {
    int32_t step;
    int32_t err; /* positive errno */
    int32_t index; /* op index, or -1 */
};

/* Exec requests (Python -> init, over the control socket, SCM_RIGHTS carries
 * [reply socket, stdin, stdout, stderr] (only the reply socket with
 * SBX_EXEC_TTY) and, with SBX_EXEC_CGROUP, the command's cgroup directory). */
#define SBX_MSG_EXEC 1
#define SBX_MSG_SIGNAL 2
#define SBX_MSG_STOP 3
#define SBX_MSG_PLAN 4
#define SBX_MSG_GO 5
#define SBX_MSG_NETNS 6 /* init -> parent: a uint32 type, the netns fd in SCM_RIGHTS */
#define SBX_MSG_START 7 /* start the held main command; SCM_RIGHTS: its reply socket */

#define SBX_EXEC_MAIN 0x01u /* the container ends when this process ends */
#define SBX_EXEC_NO_NEW_PRIVS 0x02u
#define SBX_EXEC_SET_GROUPS 0x04u /* setgroups() is allowed for this user ns */
#define SBX_EXEC_QUIET 0x08u /* no STARTED reply (FAILED and EXITED only) */
#define SBX_EXEC_CGROUP 0x10u /* a 5th fd: a cgroup v2 directory to start the command in */
#define SBX_EXEC_TTY                                                   \
    0x20u /* no stdio fds: the init opens a pseudo-terminal in the     \
           * container's devpts, sends its master back (REPLY_TTY) and \
           * makes the slave the command's stdio and controlling terminal */
#define SBX_EXEC_HOLD                                                       \
    0x40u /* a main command kept (with its stdio or terminal) until a START \
           * message: the OCI "created" state; replies STARTED with pid 0 */
#define SBX_EXEC_CAP_SETS                                                   \
    0x80u /* the command's capability sets are exactly cap_keep (bounding), \
           * cap_effective, cap_permitted, cap_inheritable and cap_ambient, \
           * whatever its uid (the OCI runtime); without it the kept set is \
           * root's bounding, effective and permitted set, and nothing else */

#define SBX_MAX_REQUEST (256 * 1024)
#define SBX_MAX_RLIMITS 16

struct sbx_rlimit {
    uint32_t resource;
    uint32_t pad;
    uint64_t soft;
    uint64_t hard;
};

struct sbx_exec_hdr {
    uint32_t type; /* SBX_MSG_EXEC */
    uint32_t flags;
    uint32_t uid;
    uint32_t gid;
    uint32_t n_groups; /* followed by n_groups uint32 gids */
    uint32_t n_rlimits; /* followed by n_rlimits struct sbx_rlimit */
    uint64_t cap_keep; /* capability bitmask kept in the bounding/effective/permitted sets */
    uint32_t argc;
    uint32_t envc;
    uint32_t strings_len; /* then: cwd \0 search_path \0 argv... \0 envp... \0 */
    uint32_t fault; /* tests: step | errno << 16 forces that step to fail */
    uint32_t id; /* the host's name for this command (SIGNAL uses it) */
    uint32_t tty_size; /* SBX_EXEC_TTY: the initial window size, rows << 16 | cols */
    uint32_t pad;
    uint64_t cap_effective; /* with SBX_EXEC_CAP_SETS: the other four sets */
    uint64_t cap_permitted;
    uint64_t cap_inheritable;
    uint64_t cap_ambient;
};

struct sbx_signal_msg {
    uint32_t type; /* SBX_MSG_SIGNAL or SBX_MSG_STOP */
    uint32_t id; /* the command's id (SBX_MSG_SIGNAL) */
    int32_t sig;
    uint32_t group; /* signal the process group */
    uint64_t grace_ms; /* STOP: time between SIGTERM and SIGKILL */
};

/* Replies (init -> Python) on the per-exec reply socket. */
#define SBX_REPLY_STARTED 1
#define SBX_REPLY_FAILED 2
#define SBX_REPLY_EXITED 3
/* Sent by the command's own child, first, before any FAILED or STARTED
 * (not for a QUIET request): the kernel attaches the sender's credentials,
 * its pid translated into the host's pid namespace. */
#define SBX_REPLY_PID 4
/* SBX_EXEC_TTY: sent by the init first of all, with the terminal's master
 * as SCM_RIGHTS (or FAILED with SBX_STEP_TTY instead). */
#define SBX_REPLY_TTY 5

struct sbx_reply {
    int32_t type;
    int32_t pid; /* container pid (with STARTED, EXITED and PID) */
    int32_t status; /* wait status, with EXITED */
    struct sbx_report report; /* with FAILED */
    uint32_t flags; /* with EXITED and FAILED: SBX_REPLY_CGROUP_READY */
};

/* The command's own cgroup holds nothing of it any more (at most the forker
 * the init keeps there: init.c), so the host may give it to another command.
 * A FAILED reply without it: the host kills what the start left there (a
 * command whose forker died before it answered). */
#define SBX_REPLY_CGROUP_READY 0x1u

/* A seccomp policy to compile (in the extension, parent side, with
 * libseccomp): Python resolves names, capabilities and architectures. */
struct sbx_seccomp_cond {
    uint32_t arg; /* 0-5 */
    uint32_t op; /* enum scmp_compare */
    uint64_t value;
    uint64_t value_two; /* the mask's operand, with SCMP_CMP_MASKED_EQ */
};

struct sbx_seccomp_rule {
    int32_t syscall; /* libseccomp's number: native, or negative for another ABI's */
    uint32_t action; /* SECCOMP_RET_* with its data */
    uint32_t n_conds;
    uint32_t pad;
    struct sbx_seccomp_cond conds[6];
};

#endif
