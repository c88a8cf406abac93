#include "report.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

void sbx_report_write(int fd, int step, int err, int index)
{
    struct sbx_report r = {.step = step, .err = err, .index = index};
    ssize_t n;
    do {
        n = write(fd, &r, sizeof(r));
    } while (n < 0 && errno == EINTR);
}

void sbx_report_fail(int fd, int step, int err, int index)
{
    sbx_report_write(fd, step, err, index);
    _exit(127);
}

int sbx_fd_high(int fd)
{
    int r = fcntl(fd, F_DUPFD_CLOEXEC, 10);
    return r < 0 ? -errno : r;
}
