#ifndef SBX_LAUNCHER_H
#define SBX_LAUNCHER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "command.h"

#define SBX_LAUNCHER_GONE (-2) /* it ended before taking the request: fork it another way */
#define SBX_LAUNCHER_LOST (-3) /* it died with the request: the command may run, never fork it again */

/* Fork the launcher (from the init, after the bounding set was dropped to
 * `bounding`); it installs plan's filter on itself (with `cgroups`, the one
 * for the launcher of commands with cgroups of their own).  With a
 * cgroup_fd (else -1), a forker born in that cgroup v2 directory instead
 * (launcher.c), which ends after an idle while.  Returns the init's end of
 * its socket and sets *pid, or -1 with errno. */
int sbx_launcher_start(const struct sbx_plan *plan, uint64_t bounding, int cgroups, int cgroup_fd,
                       pid_t *pid);

/* Have the launcher fork and exec the command of the EXEC request req
 * (len bytes) with these stdio fds and report pipe; the command's child
 * announces its pid on reply_fd (-1: a QUIET request, it does not), born in
 * the cgroup v2 directory cgroup_fd (-1: none).  Returns the pid once
 * it has exec'd or reported its failure (as vfork), -1 with errno when it
 * could not fork, SBX_LAUNCHER_GONE when the launcher had ended before the
 * request, or SBX_LAUNCHER_LOST when it died before answering.  *serving:
 * the launcher said it serves (the first call waits for that word, so that
 * a launcher ending at its start, as one not the child of PID 1 does, is
 * GONE, not LOST); 0 for a new launcher.  pid: the launcher's (a stopped
 * one is killed: launcher.c). */
pid_t sbx_launcher_fork(int fd, pid_t pid, int *serving, const void *req, size_t len, const int stdio[3],
                        int reply_fd, int report_fd, int cgroup_fd);

#endif
