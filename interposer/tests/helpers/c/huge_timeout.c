/* select and ppoll with a timeout too long for any clock ({LONG_MAX, 0}:
 * the kernel takes it as "forever") on a readable pipe: both answer 1.
 * (The library once overflowed its deadline and failed the call, EIO.) */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

int main(void)
{
    int p[2];
    if (pipe(p) < 0 || write(p[1], "x", 1) != 1)
        return 2;
    fd_set r;
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    struct timeval tv = {LONG_MAX, 0};
    int n = select(p[0] + 1, &r, 0, 0, &tv);
    printf("select=%d errno=%s\n", n, n < 0 ? strerror(errno) : "-");
    struct pollfd pf = {p[0], POLLIN, 0};
    struct timespec ts = {LONG_MAX, 0};
    n = ppoll(&pf, 1, &ts, 0);
    printf("ppoll=%d errno=%s\n", n, n < 0 ? strerror(errno) : "-");
    return 0;
}
