#ifndef SBX_CLONE_H
#define SBX_CLONE_H

#include <linux/sched.h>

/* clone3(args) whose child runs fn(arg) on the stack args describes and
 * exits with its return value (it never returns here).  clone3 cannot run
 * a function itself (it returns twice, in the child on the new stack), so
 * this is a few lines of assembly, as libc's clone() is.  Returns the
 * child's pid in the parent, or -errno (-ENOSYS: no clone3, or an
 * architecture without the assembly).  Runs in the parent; with
 * CLONE_VM | CLONE_VFORK the caller sleeps until the child execs or exits. */
long sbx_clone3_run(struct clone_args *args, int (*fn)(void *), void *arg);

#endif
