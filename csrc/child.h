#ifndef SBX_CHILD_H
#define SBX_CHILD_H

#include "sbx.h"

/* Run the set-up sequence of plan in the freshly cloned child and execveat
 * the init.  Never returns. */
__attribute__((noreturn)) void sbx_child_main(const struct sbx_plan *plan);

#endif
