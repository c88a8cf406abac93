#ifndef SBX_COMMAND_H
#define SBX_COMMAND_H

#include "sbx.h"

/* A parsed exec request: pointers into the receive buffer. */
struct sbx_command {
    const struct sbx_exec_hdr *hdr;
    const uint32_t *groups;
    const struct sbx_rlimit *rlimits;
    const char *cwd;
    const char *search_path; /* PATH used to find argv[0] */
    char **argv;
    char **envp;
    int stdio[3];
    int cgroup_fd; /* the command's cgroup v2 directory, or -1 */
    int reply_fd; /* the host's reply socket, to announce our pid on; -1: do not */
    uint64_t cap_bounding; /* the init's bounding set when it forked us */
    const void *filter; /* the container's seccomp BPF, installed last */
    uint32_t filter_len; /* bytes; 0: none */
};

/* Parse len bytes of buf into cmd, using argv_space (n_space pointers)
 * for argv and envp.  Returns 0 or -EINVAL/-E2BIG. */
int sbx_command_parse(char *buf, size_t len, char **argv_space, size_t n_space, struct sbx_command *cmd);

/* Reset every signal disposition to the default (the init does it once). */
void sbx_reset_dispositions(void);

/* Drop every capability not in keep from the bounding set; 0 or -errno. */
int sbx_drop_bounding(uint64_t keep);

/* In the forked child of the init: announce its pid on cmd->reply_fd (if
 * any), process set-up, the seccomp filter, then execve.  Reports failures
 * on report_fd.  Never returns. */
__attribute__((noreturn)) void sbx_command_exec(const struct sbx_command *cmd, int report_fd);

#endif
