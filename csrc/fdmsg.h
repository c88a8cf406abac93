#ifndef SBX_FDMSG_H
#define SBX_FDMSG_H

#include <stddef.h>
#include <sys/types.h>

#define SBX_RECV_MAX_FDS 32

/* recvmsg() of one message into buf (len bytes) with its SCM_RIGHTS fds,
 * close-on-exec: up to max_fds (at most SBX_RECV_MAX_FDS) go into fds and
 * *nfds says how many; any beyond are closed.  *flags gets msg_flags
 * (MSG_TRUNC, MSG_CTRUNC).  Returns what recvmsg returns. */
ssize_t sbx_recv_with_fds(int sock, void *buf, size_t len, int *fds, int max_fds, int *nfds, int *flags);

#endif
