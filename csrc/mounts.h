#ifndef SBX_MOUNTS_H
#define SBX_MOUNTS_H

#include "sbx.h"

/* All of these run in the cloned child: no allocation, return 0 (or an fd)
 * on success and -errno on failure, never exit. */

/* Mount a scratch tmpfs on base, enter it (our cwd until the pivot) and
 * create newroot/ in it. */
int sbx_enter_base(const char *base);

/* Clone the host tree an op needs (BIND: its source; MASK: /dev/null) as
 * a detached mount, while the child still has its creator's ids.  Returns
 * the tree fd, -1 when the op needs none, or -errno. */
int sbx_clone_source(const struct sbx_mount_op *op);

/* Clone rootfs (recursively) as a detached tree; with read_only, every
 * mount below its top is made read-only.  fd or -errno. */
/* A new clone of a detached tree from sbx_clone_source (the op's flags
 * applied again): a mount made now, for mountinfo's order; the first is
 * parked in the scratch base (our cwd), dropped with it at the pivot (a
 * closed detached tree costs an RCU grace period).  fd or -errno. */
int sbx_clone_again(int tree, unsigned int flags, size_t index);

/* Give the attached mount at fd the propagation of the SBX_MF_* bits in
 * flags (none: leave it, private).  0 or -errno. */
int sbx_propagate(int fd, unsigned int flags);

int sbx_clone_rootfs(const char *rootfs, int read_only);

/* Mount the container root at /newroot: the rootfs tree (consumed), or a
 * tmpfs when rootfs_tree < 0.  Returns an O_PATH fd of the root or -errno. */
int sbx_make_root(int rootfs_tree);

/* Apply one mount op below rootfd; tree is what sbx_clone_source returned
 * for it (consumed). */
int sbx_apply_mount(int rootfd, const struct sbx_mount_op *op, int tree);

/* An overlayfs root: the n lower layer dir fds (top first, O_RDONLY
 * directories, consumed) and the upper and work dirs upper/ and work/ of
 * host_dir (consumed; mounted "volatile": never synced), or when host_dir < 0
 * of a fresh tmpfs mounted at /overlay in the scratch base (tmpfs_data: its
 * options).  Runs as the
 * container's root after sbx_enter_base.  Returns a detached mount or
 * -errno; *upper_out is then an fd of the upper dir. */
int sbx_make_overlay(const int *lower_fds, size_t n, int host_dir, const char *tmpfs_data, int *upper_out);

/* Make the root mount read-only (not the mounts on top of it). */
int sbx_root_read_only(int rootfd);

/* Make /newroot the root and detach everything of the host. */
int sbx_pivot_into_root(void);

/* Once every op is applied: the masks' shared trees (null_tree, or -1, and
 * the empty directory's) go into the scratch base, to be dropped with it. */
void sbx_park_mask_trees(int null_tree);

#endif
