#ifndef SBX_RESOLVE_H
#define SBX_RESOLVE_H

/* Open path (absolute, inside the root rootfd) without ever resolving
 * outside that root: openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS).
 * Returns an fd (O_CLOEXEC) or -errno.  Used by the set-up program and,
 * through the extension, by Python to read a container's /etc/passwd. */
int sbx_open_in_root(int rootfd, const char *path, int flags);

/* Set the calling thread's (only its: raw syscalls) filesystem uid and
 * gid, e.g. to a container root's host ids while files are created in it.
 * Returns the fsuid now in force (the caller checks it). */
int sbx_set_fsids(int uid, int gid);

#endif
