#ifndef SBX_IDMAP_H
#define SBX_IDMAP_H

/* Host side (the extension): a detached recursive clone of the host path
 * source, idmapped to the user namespace userns_fd (MOUNT_ATTR_IDMAP), made
 * private, read-only with SBX_MF_RDONLY in flags.  Sent to the child with
 * the GO message (SBX_MF_IDMAP).  Returns the tree fd or -errno. */
int sbx_idmapped_tree(const char *source, int userns_fd, unsigned int flags);

#endif
