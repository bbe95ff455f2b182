/* A _FORTIFY_SOURCE program: its read/recv/recvfrom become __read_chk,
 * __recv_chk, __recvfrom_chk, and fcntl becomes fcntl64. argv[1] is the
 * length asked for with a 4-byte buffer: more than 4 must abort like glibc. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    size_t want = argc > 1 ? strtoul(argv[1], NULL, 10) : 4;
    int sv[2];
    char buf[4];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 10;
    if (write(sv[0], "abcdefghijkl", 12) != 12) return 11;
    ssize_t a = read(sv[1], buf, want);
    printf("%.*s ", (int)a, buf);
    ssize_t b = recv(sv[1], buf, want, 0);
    printf("%.*s ", (int)b, buf);
    ssize_t c = recvfrom(sv[1], buf, want, 0, NULL, NULL);
    printf("%.*s ", (int)c, buf);
    int flags = fcntl(sv[1], F_GETFL);
    if (fcntl(sv[1], F_SETFL, flags | O_NONBLOCK) != 0) return 12;
    errno = 0;
    ssize_t d = read(sv[1], buf, want);
    printf("%zd %s ", d, errno == EAGAIN ? "EAGAIN" : strerror(errno));
    if (write(sv[0], "xyz", 3) != 3) return 13;
    int avail = -1;
    if (ioctl(sv[1], FIONREAD, &avail) != 0) return 14;
    printf("%d\n", avail);
    return 0;
}
