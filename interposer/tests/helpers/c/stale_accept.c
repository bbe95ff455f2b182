// A listener's kernel-TCP accept handing out an fd number whose fd-table
// entry is stale (the emulated object once there was closed past the
// library: raw close). Expected (kernel semantics): getpeername works and
// getsockname reports the accepted connection's port (L2's).
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

static int listener(int *port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    if (bind(s, (void *)&a, sizeof a) || listen(s, 16)) { perror("bind/listen"); exit(2); }
    socklen_t l = sizeof a; getsockname(s, (void *)&a, &l); *port = ntohs(a.sin_port);
    return s;
}

int main(void) {
    int p1, p2;
    int l2 = listener(&p2);
    // A plain kernel TCP client (raw system calls: past the library).
    int c = syscall(SYS_socket, AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(p2), .sin_addr.s_addr = htonl(0x7f000001)};
    if (syscall(SYS_connect, c, &a, sizeof a)) { perror("raw connect"); return 2; }
    int l1 = listener(&p1);
    printf("l2=%d (port %d) raw client=%d l1=%d (port %d)\n", l2, p2, c, l1, p1);
    // Close l1 past the library: its entry stays in the fd table.
    syscall(SYS_close, l1);
    int x = accept(l2, NULL, NULL);
    printf("accepted fd %d (%s)\n", x, x == l1 ? "the stale number" : "another number");
    struct sockaddr_in n; socklen_t nl = sizeof n;
    int r = getsockname(x, (void *)&n, &nl);
    printf("getsockname(accepted) = %d, port %d (want %d)\n", r, r == 0 ? ntohs(n.sin_port) : -1, p2);
    nl = sizeof n; errno = 0;
    r = getpeername(x, (void *)&n, &nl);
    printf("getpeername(accepted) = %d errno %d (%s)\n", r, errno, r ? strerror(errno) : "ok");
    syscall(SYS_write, c, "ping", 4);
    char buf[8] = {0}; errno = 0;
    ssize_t got = recv(x, buf, sizeof buf, MSG_DONTWAIT);
    printf("recv(accepted) = %zd errno %d data '%s' (want 4 'ping')\n", got, errno, buf);
    return 0;
}
