#ifndef SBX_PLAN_H
#define SBX_PLAN_H

#include "sbx.h"

/* Parse a PLAN message (len bytes in buf, which must outlive plan) into
 * plan, using ops and tree_fds (max_ops entries each).  Returns 0 or
 * -EBADMSG / -E2BIG.  Allocation-free. */
int sbx_plan_parse(char *buf, size_t len, struct sbx_plan *plan, struct sbx_mount_op *ops, int *tree_fds,
                   size_t max_ops);

#endif
