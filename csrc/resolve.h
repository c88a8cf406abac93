#ifndef SBX_RESOLVE_H
#define SBX_RESOLVE_H

/* Open path (absolute, inside the root rootfd) without ever resolving
 * outside that root: openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS).
 * Returns an fd (O_CLOEXEC) or -errno.  Used by the set-up program and,
 * through the extension, by Python to read a container's /etc/passwd. */
int sbx_open_in_root(int rootfd, const char *path, int flags);

#endif
