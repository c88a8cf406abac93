/* Mount operations for the cloned child.  Every target is resolved inside
 * the new root with openat2(RESOLVE_IN_ROOT), so a symlink planted in a
 * rootfs can never redirect a mount onto the host.  Mounts are built with
 * the fd-based mount API (open_tree, fsmount, mount_setattr, move_mount):
 * a read-only recursive bind is applied to the detached tree before it is
 * attached, so there is no window in which it is writable. */
#include "mounts.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "resolve.h"
#include "syscalls.h"

/* The new root, relative to the scratch base (our cwd during the set-up),
 * and the base-to-root path as /proc shows it (set by sbx_enter_base). */
#define NEWROOT "newroot"
static char newroot_path[PATH_MAX];

static int neg_errno(void)
{
    return -errno;
}

static void close_keep_errno(int fd)
{
    int saved = errno;
    if (fd >= 0)
        close(fd);
    errno = saved;
}

/* The kernel file systems a user mount must never cover: the container's
 * own (with their masks and read-only paths) and any a root directory
 * brings along. */
static int kernel_fs(long type)
{
    switch (type) {
    case PROC_SUPER_MAGIC:
    case SYSFS_MAGIC:
    case DEVPTS_SUPER_MAGIC:
    case CGROUP_SUPER_MAGIC:
    case CGROUP2_SUPER_MAGIC:
    case SECURITYFS_MAGIC:
    case DEBUGFS_MAGIC:
    case TRACEFS_MAGIC:
    case BPF_FS_MAGIC:
    case SELINUX_MAGIC:
    case SMACK_MAGIC:
    case PSTOREFS_MAGIC:
    case EFIVARFS_MAGIC:
        return 1;
    default:
        return 0;
    }
}

static int on_or_under(const char *path, const char *dir)
{
    size_t n = strlen(dir);
    return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* Where a user mount's target (or, is_point 0, the deepest existing
 * directory above a target to be made) landed, once resolved in the root:
 * a symlink in a hostile root may lead onto the container's /proc, /sys
 * (mounted after the user's mounts) or /dev/pts, onto /dev itself or the
 * root.  config.py refuses the same paths as written.  The path comes from
 * the container's /proc (mounted before any user op), as our root sees it (the host's
 * root: newroot_path).  Returns 0, -EXDEV when refused, or -errno.  Runs in the child. */
static int check_user_target(int fd, int is_point)
{
    struct statfs fs;
    if (fstatfs(fd, &fs) < 0)
        return neg_errno();
    if (kernel_fs((long)fs.f_type))
        return -EXDEV;
    char link[48] = NEWROOT "/proc/self/fd/", path[PATH_MAX], digits[12];
    const char *root = newroot_path;
    size_t n = 0, len = strlen(link);
    for (unsigned int v = (unsigned int)fd; n == 0 || v; v /= 10)
        digits[n++] = (char)('0' + v % 10);
    while (n)
        link[len++] = digits[--n];
    link[len] = '\0';
    ssize_t got = readlink(link, path, sizeof(path) - 1);
    if (got < 0)
        return neg_errno();
    path[got] = '\0';
    if (!on_or_under(path, root))
        return -EXDEV; /* not inside the root: never expected, refused */
    const char *p = path + strlen(root);
    if (on_or_under(p, "/proc") || on_or_under(p, "/sys") || on_or_under(p, "/dev/pts"))
        return -EXDEV;
    return is_point && (!*p || strcmp(p, "/dev") == 0) ? -EXDEV : 0;
}

/* Create buf[start..] one component at a time below the directory cur
 * (consumed unless it is keep).  Components we create ourselves cannot be
 * symlinks, so each is opened with O_NOFOLLOW relative to the previous one;
 * a name that appears meanwhile (EEXIST) is resolved inside the root. */
static int create_below(int rootfd, int cur, int keep, char *buf, size_t start, size_t len, int as_file)
{
    while (start < len) {
        size_t end = start;
        while (end < len && buf[end] != '/')
            end++;
        buf[end] = '\0';
        int last = end == len, r;
        if (last && as_file) {
            r = openat(cur, buf + start, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
            if (r >= 0)
                close(r);
        } else {
            r = mkdirat(cur, buf + start, 0755);
        }
        int next;
        if (r < 0 && errno != EEXIST) {
            next = neg_errno();
        } else if (r < 0) {
            next = sbx_open_in_root(rootfd, buf, O_PATH);
        } else {
            next = openat(cur, buf + start, O_PATH | O_NOFOLLOW | O_CLOEXEC);
            if (next < 0)
                next = neg_errno();
        }
        if (cur != keep)
            close(cur);
        if (next < 0)
            return next;
        cur = next;
        if (!last)
            buf[end] = '/';
        start = end + 1;
    }
    return cur;
}

/* Return an O_PATH fd of path inside rootfd, creating missing directories
 * (and the last component as an empty file when as_file).  Finds the
 * deepest existing ancestor inside the root, then creates below it; for a
 * user op, checks that ancestor before creating anything. */
static int find_or_make(int rootfd, const char *path, int as_file, int user)
{
    int fd = sbx_open_in_root(rootfd, path, O_PATH);
    if (fd != -ENOENT)
        return fd;
    char buf[PATH_MAX];
    size_t len = strlen(path);
    if (len >= sizeof(buf) || len < 2 || path[0] != '/')
        return len >= sizeof(buf) ? -ENAMETOOLONG : -EINVAL;
    memcpy(buf, path, len + 1);
    size_t end = len;
    for (;;) {
        size_t slash = end;
        while (slash > 0 && buf[slash - 1] != '/')
            slash--;
        size_t parent_len = slash - 1; /* buf[slash - 1] == '/' */
        if (parent_len == 0)
            return create_below(rootfd, rootfd, rootfd, buf, 1, len, as_file);
        buf[parent_len] = '\0';
        int parent = sbx_open_in_root(rootfd, buf, O_PATH | O_DIRECTORY);
        buf[parent_len] = '/';
        int r = parent >= 0 && user ? check_user_target(parent, 0) : 0;
        if (r < 0) {
            close(parent);
            return r;
        }
        if (parent >= 0)
            return create_below(rootfd, parent, -1, buf, slash, len, as_file);
        if (parent != -ENOENT)
            return parent;
        end = parent_len;
    }
}

static int make_target(int rootfd, const char *path, int as_file, int user)
{
    int fd = find_or_make(rootfd, path, as_file, user);
    int r = fd >= 0 && user ? check_user_target(fd, 1) : 0;
    if (r < 0) {
        close(fd);
        return r;
    }
    return fd;
}

static unsigned int mount_attrs(unsigned int flags)
{
    unsigned int a = 0;
    if (flags & SBX_MF_RDONLY)
        a |= MOUNT_ATTR_RDONLY;
    if (flags & SBX_MF_NOSUID)
        a |= MOUNT_ATTR_NOSUID;
    if (flags & SBX_MF_NODEV)
        a |= MOUNT_ATTR_NODEV;
    if (flags & SBX_MF_NOEXEC)
        a |= MOUNT_ATTR_NOEXEC;
    return a;
}

/* Configure a new filesystem from "k=v,flag,..." and return a detached
 * mount fd. */
static int new_fs(const char *fstype, const char *data, unsigned int attrs)
{
    int fs = sbx_fsopen(fstype, FSOPEN_CLOEXEC);
    if (fs < 0)
        return neg_errno();
    char buf[256];
    size_t len = data ? strlen(data) : 0;
    if (len >= sizeof(buf)) {
        close(fs);
        return -E2BIG;
    }
    if (data)
        memcpy(buf, data, len + 1);
    char *key = buf;
    for (size_t i = 0; data && i <= len; i++) {
        if (buf[i] != ',' && buf[i] != '\0')
            continue;
        buf[i] = '\0';
        char *eq = strchr(key, '=');
        int r;
        if (eq) {
            *eq = '\0';
            r = sbx_fsconfig(fs, FSCONFIG_SET_STRING, key, eq + 1, 0);
        } else {
            r = *key ? sbx_fsconfig(fs, FSCONFIG_SET_FLAG, key, NULL, 0) : 0;
        }
        if (r < 0) {
            close_keep_errno(fs);
            return neg_errno();
        }
        key = buf + i + 1;
    }
    if (sbx_fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
        close_keep_errno(fs);
        return neg_errno();
    }
    int mnt = sbx_fsmount(fs, FSMOUNT_CLOEXEC, attrs);
    close_keep_errno(fs);
    return mnt < 0 ? neg_errno() : mnt;
}

/* Attach the detached tree onto the target fd; closes tree. */
static int attach(int tree, int target)
{
    int r = sbx_move_mount(tree, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH);
    r = r < 0 ? neg_errno() : 0;
    close(tree);
    return r;
}

/* Clone the tree at (dirfd, path), apply attrs, return it detached. */
static int clone_tree(int dirfd, const char *path, unsigned int flags)
{
    unsigned int at_flags = (flags & SBX_MF_RECURSIVE) ? AT_RECURSIVE : 0;
    if (!*path)
        at_flags |= AT_EMPTY_PATH;
    int tree = sbx_open_tree(dirfd, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | at_flags);
    if (tree < 0)
        return neg_errno();
    /* Private: nothing mounted later on the host shows up in the copy,
     * and nothing mounted in the container reaches the host. */
    struct mount_attr attr = {.attr_set = mount_attrs(flags), .propagation = MS_PRIVATE};
    if (sbx_mount_setattr(tree, "", AT_EMPTY_PATH | (at_flags & AT_RECURSIVE), &attr) < 0) {
        close_keep_errno(tree);
        return neg_errno();
    }
    return tree;
}

/* The propagation the op asks for, on the attached tree (a detached one
 * cannot be shared); it is a peer of nothing outside the container: every
 * tree we attach was made private first. */
int sbx_propagate(int tree, unsigned int flags)
{
    struct mount_attr attr = {.propagation = (flags & SBX_MF_SHARED)       ? MS_SHARED
                                             : (flags & SBX_MF_SLAVE)      ? MS_SLAVE
                                             : (flags & SBX_MF_UNBINDABLE) ? MS_UNBINDABLE
                                                                           : 0};
    if (!attr.propagation)
        return 0;
    unsigned int at = AT_EMPTY_PATH | ((flags & SBX_MF_PROPAGATE_REC) ? AT_RECURSIVE : 0);
    return sbx_mount_setattr(tree, "", at, &attr) < 0 ? neg_errno() : 0;
}

static void park_in_base(int tree, const char *name, int is_dir);

int sbx_clone_again(int tree, unsigned int flags, size_t index)
{
    int again = clone_tree(tree, "", flags);
    if (again < 0)
        return again;
    /* The first clone is parked, not closed (see park_in_base). */
    char name[32] = "again-";
    size_t n = 6, digits = 1;
    for (size_t v = index; v >= 10; v /= 10)
        digits++;
    for (size_t d = digits, v = index; d > 0; d--, v /= 10)
        name[n + d - 1] = (char)('0' + v % 10);
    name[n + digits] = '\0';
    park_in_base(tree, name, !(flags & SBX_MF_FILE));
    return again;
}

static int mount_tree_at(int rootfd, int tree, const struct sbx_mount_op *op)
{
    if (tree < 0)
        return tree;
    int t = make_target(rootfd, op->target, (op->flags & SBX_MF_FILE) != 0, (op->flags & SBX_MF_USER) != 0);
    if (t < 0) {
        close(tree);
        return t;
    }
    int r = sbx_move_mount(tree, "", t, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH);
    r = r < 0 ? neg_errno() : sbx_propagate(tree, op->flags);
    close(tree);
    close(t);
    return r;
}

/* The directory holding target (made if missing, resolved in the root),
 * or -errno; *name is target's last component. */
static int open_parent(int rootfd, const char *target, const char **name)
{
    const char *slash = strrchr(target, '/');
    char parent[PATH_MAX];
    size_t plen = (size_t)(slash - target);
    if (plen >= sizeof(parent))
        return -ENAMETOOLONG;
    memcpy(parent, target, plen);
    parent[plen] = '\0';
    *name = slash + 1;
    return make_target(rootfd, plen ? parent : "/", 0, 0);
}

static int do_symlink(int rootfd, const struct sbx_mount_op *op)
{
    const char *name;
    int pfd = open_parent(rootfd, op->target, &name);
    if (pfd < 0)
        return pfd;
    int r = symlinkat(op->source, pfd, name) < 0 ? neg_errno() : 0;
    close(pfd);
    return r;
}

/* A decimal field of a MKNOD op's data; advances *p past its comma. */
static int next_number(const char **p, unsigned long *out)
{
    char *end;
    errno = 0;
    *out = strtoul(*p, &end, 10);
    if (errno || end == *p || (*end != ',' && *end != '\0'))
        return -EINVAL;
    *p = *end ? end + 1 : end;
    return 0;
}

/* A device node or fifo (the OCI config's linux.devices), owned and
 * moded exactly as asked (not through our umask). */
static int do_mknod(int rootfd, const struct sbx_mount_op *op)
{
    const char *p = op->data ? op->data : "";
    unsigned long major, minor, mode, uid, gid;
    mode_t type = p[0] == 'c' ? S_IFCHR : p[0] == 'b' ? S_IFBLK : p[0] == 'p' ? S_IFIFO : 0;
    if (!type || p[1] != ',')
        return -EINVAL;
    p += 2;
    if (next_number(&p, &major) || next_number(&p, &minor) || next_number(&p, &mode) ||
        next_number(&p, &uid) || next_number(&p, &gid) || *p)
        return -EINVAL;
    const char *name;
    int pfd = open_parent(rootfd, op->target, &name);
    if (pfd < 0)
        return pfd;
    /* The config's node replaces what the image has there; only a node made
     * here is chowned: whatever unlink cannot remove (a mount point, e.g. a
     * node bound from the host) is an error, never changed through. */
    mode_t kind = type | (mode_t)(mode & 07777);
    dev_t dev = makedev(major, minor);
    int r = 0;
    if (mknodat(pfd, name, kind, dev) < 0 &&
        (errno != EEXIST || unlinkat(pfd, name, 0) < 0 || mknodat(pfd, name, kind, dev) < 0))
        r = neg_errno();
    else if (fchownat(pfd, name, (uid_t)uid, (gid_t)gid, AT_SYMLINK_NOFOLLOW) < 0 ||
             fchmodat(pfd, name, (mode_t)(mode & 07777), 0) < 0)
        r = neg_errno();
    close(pfd);
    return r;
}

/* Hide a file under a copy of null_tree (a read-only /dev/null bind shared
 * by every mask) and a directory under an empty read-only tmpfs. */
/* The first directory mask's empty read-only tmpfs; the others get clones
 * of it (a clone costs less than a new superblock, made and freed). */
static int empty_dir_tree = -1;

/* A copy of one of the masks' own trees: private and read-only already, and
 * a copy keeps both (no mount_setattr: one syscall less per mask). */
static int mask_copy(int tree)
{
    int copy = sbx_open_tree(tree, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
    return copy < 0 ? neg_errno() : copy;
}

static int empty_dir_clone(void)
{
    if (empty_dir_tree < 0) {
        int tree = new_fs("tmpfs", "size=0,mode=0555", MOUNT_ATTR_RDONLY);
        if (tree < 0)
            return tree;
        empty_dir_tree = tree;
    }
    return mask_copy(empty_dir_tree);
}

static int do_mask(int rootfd, const struct sbx_mount_op *op, int null_tree)
{
    int t = sbx_open_in_root(rootfd, op->target, O_PATH | O_NOFOLLOW);
    if (t < 0)
        return t;
    struct stat st;
    int tree;
    if (fstat(t, &st) < 0)
        tree = neg_errno();
    else if (S_ISDIR(st.st_mode))
        tree = empty_dir_clone();
    else
        tree = mask_copy(null_tree);
    int r = tree < 0 ? tree : attach(tree, t);
    close(t);
    return r;
}

static int do_remount(int rootfd, const struct sbx_mount_op *op)
{
    int t = sbx_open_in_root(rootfd, op->target, O_PATH);
    if (t < 0)
        return t;
    /* Bind the path onto itself first: set_attr on a plain directory
     * would change the whole mount that contains it. */
    int tree = clone_tree(t, "", op->flags | SBX_MF_RECURSIVE);
    int r = tree < 0 ? tree : attach(tree, t);
    close(t);
    return r;
}

static int fs_for(int kind, const char **fstype)
{
    switch (kind) {
    case SBX_MNT_TMPFS:
        *fstype = "tmpfs";
        return 0;
    case SBX_MNT_PROC:
        *fstype = "proc";
        return 0;
    case SBX_MNT_SYSFS:
        *fstype = "sysfs";
        return 0;
    case SBX_MNT_DEVPTS:
        *fstype = "devpts";
        return 0;
    case SBX_MNT_MQUEUE:
        *fstype = "mqueue";
        return 0;
    default:
        return -EINVAL;
    }
}

int sbx_apply_mount(int rootfd, const struct sbx_mount_op *op, int tree)
{
    const char *fstype;
    int r;
    switch (op->kind) {
    case SBX_MNT_BIND:
        r = mount_tree_at(rootfd, tree, op);
        break;
    case SBX_MNT_MKDIR:
        r = make_target(rootfd, op->target, 0, 0);
        if (r >= 0) {
            close(r);
            r = 0;
        }
        break;
    case SBX_MNT_SYMLINK:
        r = do_symlink(rootfd, op);
        break;
    case SBX_MNT_REMOUNT:
        r = do_remount(rootfd, op);
        break;
    case SBX_MNT_MASK:
        r = do_mask(rootfd, op, tree);
        break;
    case SBX_MNT_MKNOD:
        r = do_mknod(rootfd, op);
        break;
    default:
        r = fs_for(op->kind, &fstype);
        if (r == 0)
            r = mount_tree_at(rootfd, new_fs(fstype, op->data, mount_attrs(op->flags)), op);
    }
    if (r == -ENOENT && (op->flags & SBX_MF_OPTIONAL))
        return 0;
    return r;
}

/* Let go of a detached tree (closes it).  The last close of a detached
 * tree unmounts it, and every unmount waits for an expedited RCU grace
 * period (IPIs to every CPU); attached in the scratch base (our cwd until
 * the pivot), it is dropped with the base's own detach at the pivot
 * instead.  Best effort: if it cannot be attached, it is closed all the same. */
static void park_in_base(int tree, const char *name, int is_dir)
{
    if (tree < 0)
        return;
    int made = is_dir ? mkdir(name, 0700) : open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
    if (made >= 0) {
        if (!is_dir)
            close(made);
        sbx_move_mount(tree, "", AT_FDCWD, name, MOVE_MOUNT_F_EMPTY_PATH);
    }
    close(tree);
}

void sbx_park_mask_trees(int null_tree)
{
    park_in_base(null_tree, "null-tree", 0);
    park_in_base(empty_dir_tree, "empty-dir", 1);
    empty_dir_tree = -1;
}

int sbx_enter_base(const char *base)
{
    int mnt = new_fs("tmpfs", "size=64k,mode=0755", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    if (mnt < 0)
        return mnt;
    int r = sbx_move_mount(mnt, "", AT_FDCWD, base, MOVE_MOUNT_F_EMPTY_PATH);
    close_keep_errno(mnt);
    if (r < 0 || chdir(base) < 0 || mkdir(NEWROOT, 0755) < 0)
        return neg_errno();
    /* No pivot into the base: pivot_root walks every thread of the machine
     * (chroot_fs_refs), and the one into the new root detaches the host
     * tree, the base with it, all the same. */
    size_t len = strlen(base);
    if (len + sizeof("/" NEWROOT) > sizeof(newroot_path))
        return -ENAMETOOLONG;
    memcpy(newroot_path, base, len);
    memcpy(newroot_path + len, "/" NEWROOT, sizeof("/" NEWROOT));
    return 0;
}

/* Open a layer directory for the overlay (fsconfig needs a real file, not O_PATH). */
static int open_layer(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    return fd < 0 ? neg_errno() : fd;
}

static int set_dir_fd(int fs, const char *key, int fd)
{
    return sbx_fsconfig(fs, FSCONFIG_SET_FD, key, NULL, fd) < 0 ? neg_errno() : 0;
}

/* mkdir name in the directory dirfd and open it: fd or -errno. */
static int make_dir_at(int dirfd, const char *name)
{
    if (mkdirat(dirfd, name, 0755) < 0)
        return neg_errno();
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    return fd < 0 ? neg_errno() : fd;
}

/* A fresh tmpfs at overlay/ in the scratch base, for the upper and work
 * dirs (detached with the base at pivot; the overlay keeps it alive). */
static int overlay_tmpfs(const char *tmpfs_data)
{
    int mnt = new_fs("tmpfs", tmpfs_data, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    if (mnt < 0)
        return mnt;
    int r = mkdir("overlay", 0700) < 0 ? neg_errno() : 0;
    if (r == 0 && sbx_move_mount(mnt, "", AT_FDCWD, "overlay", MOVE_MOUNT_F_EMPTY_PATH) < 0)
        r = neg_errno();
    close(mnt);
    int top = r < 0 ? r : open("overlay", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (top < 0)
        return r < 0 ? r : neg_errno();
    int up = make_dir_at(top, "upper");
    r = up < 0 ? up : make_dir_at(top, "work");
    if (up >= 0)
        close(up);
    if (r >= 0)
        close(r);
    return r < 0 ? r : top;
}

static int open_sub(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    return fd < 0 ? neg_errno() : fd;
}

/* The upper and work dirs: upper/ and work/ of host_dir (an fd opened
 * before become_root, consumed), or of a fresh tmpfs when host_dir < 0. */
static int overlay_upper(int fs, int host_dir, const char *tmpfs_data, int *upper_out)
{
    int top = host_dir >= 0 ? host_dir : overlay_tmpfs(tmpfs_data);
    if (top < 0)
        return top;
    int upper = open_sub(top, "upper"), work = open_sub(top, "work");
    close(top);
    int r = upper < 0 ? upper : work < 0 ? work : set_dir_fd(fs, "upperdir", upper);
    if (r == 0)
        r = set_dir_fd(fs, "workdir", work);
    if (r == 0)
        *upper_out = upper;
    else if (upper >= 0)
        close(upper);
    if (work >= 0)
        close(work);
    return r;
}

int sbx_make_overlay(const int *lower_fds, size_t n, int host_dir, const char *tmpfs_data, int *upper_out)
{
    int fs = sbx_fsopen("overlay", FSOPEN_CLOEXEC);
    int r = fs < 0 ? neg_errno() : 0;
    for (size_t i = 0; i < n; i++) {
        if (r == 0)
            r = set_dir_fd(fs, "lowerdir+", lower_fds[i]);
        close(lower_fds[i]);
    }
    /* user.overlay.* xattrs: the only ones a user namespace's root may use
     * (the layers' opaque markers are written that way). */
    if (r == 0 && sbx_fsconfig(fs, FSCONFIG_SET_FLAG, "userxattr", NULL, 0) < 0)
        r = neg_errno();
    /* A host dir upper is never used again after the container (removed, or
     * swept after a crash), so no sync of it: without "volatile" the
     * overlay's unmount at the container's end syncs the whole host file
     * system (measured: 175 ms with 300 MB dirty elsewhere on it). */
    if (r == 0 && host_dir >= 0 && sbx_fsconfig(fs, FSCONFIG_SET_FLAG, "volatile", NULL, 0) < 0)
        r = neg_errno();
    if (r == 0)
        r = overlay_upper(fs, host_dir, tmpfs_data, upper_out);
    else if (host_dir >= 0)
        close(host_dir);
    if (r == 0 && sbx_fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        r = neg_errno();
    int mnt = r < 0 ? r : sbx_fsmount(fs, FSMOUNT_CLOEXEC, 0);
    if (mnt < 0 && r == 0)
        mnt = neg_errno();
    if (fs >= 0)
        close(fs);
    return mnt;
}

int sbx_clone_source(const struct sbx_mount_op *op)
{
    if (op->kind == SBX_MNT_LOWER)
        return open_layer(op->source);
    if (op->kind == SBX_MNT_OVERLAY && op->source) {
        /* O_PATH: the dir belongs to the container's root (0700), which we
         * are not yet; upper/ and work/ are opened in it once we are. */
        int fd = open(op->source, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        return fd < 0 ? neg_errno() : fd;
    }
    if (op->kind == SBX_MNT_BIND)
        return clone_tree(AT_FDCWD, op->source, op->flags);
    if (op->kind == SBX_MNT_MASK) /* every mask shares the first one's tree */
        return clone_tree(AT_FDCWD, op->source, SBX_MF_RDONLY);
    return -1;
}

int sbx_clone_rootfs(const char *rootfs, int read_only)
{
    int tree = clone_tree(AT_FDCWD, rootfs, SBX_MF_RECURSIVE | (read_only ? SBX_MF_RDONLY : 0));
    if (tree < 0 || !read_only)
        return tree;
    /* Mounts inside the rootfs directory are read-only from here on; the top
     * stays writable until the mount points are made (sbx_root_read_only). */
    struct mount_attr attr = {.attr_clr = MOUNT_ATTR_RDONLY};
    if (sbx_mount_setattr(tree, "", AT_EMPTY_PATH, &attr) < 0) {
        close_keep_errno(tree);
        return neg_errno();
    }
    return tree;
}

int sbx_make_root(int rootfs_tree)
{
    int tree =
        rootfs_tree >= 0 ? rootfs_tree : new_fs("tmpfs", "mode=0755", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    if (tree < 0)
        return tree;
    int r = sbx_move_mount(tree, "", AT_FDCWD, NEWROOT, MOVE_MOUNT_F_EMPTY_PATH);
    close_keep_errno(tree);
    if (r < 0)
        return neg_errno();
    r = open(NEWROOT, O_PATH | O_DIRECTORY | O_CLOEXEC);
    return r < 0 ? neg_errno() : r;
}

int sbx_root_read_only(int rootfd)
{
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_RDONLY};
    return sbx_mount_setattr(rootfd, "", AT_EMPTY_PATH, &attr) < 0 ? neg_errno() : 0;
}

int sbx_pivot_into_root(void)
{
    /* pivot_root(".", ".") stacks the old root on top of the new one;
     * detaching "." then drops the host's whole mount tree. */
    if (chdir(NEWROOT) < 0 || sbx_pivot_root(".", ".") < 0 || umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
        return neg_errno();
    return 0;
}
