#ifndef SBX_SPAWN_H
#define SBX_SPAWN_H

#include "sbx.h"

/* Clone a child in new namespaces that execs sbx-init with the fds of
 * args: born in the cgroup v2 directory args->cgroup_fd (clone3
 * CLONE_INTO_CGROUP; without clone3 it writes itself into cgroup.procs),
 * it first joins the v1 cgroups (writes "0" to args->attach_fds) and
 * unshares its cgroup namespace.  Returns once the child has exec'd (or
 * failed, having reported on args->fds[3]): its pid and pidfd, or -errno.
 * Runs in the parent. */
int sbx_spawn(const struct sbx_spawn_args *args, int *pidfd_out);

#endif
