/* Idmapped bind mounts, made by the host process.  The kernel lets only a
 * process privileged over the source's file system (CAP_SYS_ADMIN in its
 * superblock's user namespace: the initial one for a disk) idmap a mount;
 * the container's child lost that the moment it was cloned into its own
 * user namespace, so the host, as root, makes the tree and passes it over
 * with the go message.  The tree is detached until the child attaches it:
 * the kernel idmaps only mounts not yet visible anywhere. */
#include "idmap.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include "sbx.h"
#include "syscalls.h"

int sbx_idmapped_tree(const char *source, int userns_fd, unsigned int flags)
{
    int tree = sbx_open_tree(AT_FDCWD, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (tree < 0)
        return -errno;
    struct mount_attr attr = {
        .attr_set = MOUNT_ATTR_IDMAP | ((flags & SBX_MF_RDONLY) ? MOUNT_ATTR_RDONLY : 0),
        .userns_fd = (unsigned int)userns_fd,
        .propagation = MS_PRIVATE,
    };
    if (sbx_mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr) < 0) {
        int err = errno;
        close(tree);
        return -err;
    }
    return tree;
}
