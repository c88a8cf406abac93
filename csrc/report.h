/* The child's only way out: one fixed-size record on the error pipe. */
#ifndef SBX_REPORT_H
#define SBX_REPORT_H

#include "sbx.h"

/* Write {step, err, index} to fd and _exit(127).  Async-signal-safe;
 * runs in a cloned child or an init child.  err is a positive errno. */
__attribute__((noreturn)) void sbx_report_fail(int fd, int step, int err, int index);

/* Write the record without exiting (init relays an exec child's failure). */
void sbx_report_write(int fd, int step, int err, int index);

/* Move fd to a number >= 10 with O_CLOEXEC; returns the new fd or -errno. */
int sbx_fd_high(int fd);

#endif
