#ifndef SBX_SPAWN_H
#define SBX_SPAWN_H

#include "sbx.h"

/* Clone a child that runs plan.  Returns its pid (and its pidfd in
 * *pidfd_out) or -errno.  Runs in the parent; releases nothing. */
int sbx_spawn(const struct sbx_plan *plan, int *pidfd_out);

#endif
