#include "resolve.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "syscalls.h"

int sbx_open_in_root(int rootfd, const char *path, int flags)
{
    struct open_how how = {
        .flags = (uint64_t)(flags | O_CLOEXEC),
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    /* EAGAIN: a rename or mount anywhere raced with a ".." step; openat2(2)
     * says to retry. */
    int fd, tries = 0;
    do {
        fd = sbx_openat2(rootfd, path[0] ? path : "/", &how);
    } while (fd < 0 && errno == EAGAIN && ++tries < 1000);
    return fd < 0 ? -errno : fd;
}

int sbx_set_fsids(int uid, int gid)
{
    syscall(SYS_setfsgid, gid);
    syscall(SYS_setfsuid, uid);
    return (int)syscall(SYS_setfsuid, -1);
}
