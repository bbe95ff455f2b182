// A peer that shut down writing, then closed with our bytes unread (a
// RST): its FIN reached us only if what it sent before it fitted in our
// receive window (we read nothing). Reached: the RST finds us in
// CLOSE_WAIT, EPIPE; not: in ESTABLISHED, ECONNRESET (tcp_reset). For
// each size the peer sent: poll's revents, then SO_ERROR or two sends
// (errno, SIGPIPE raised or not). "warm": we had read 4 MiB from the peer
// first, which grows our receive window (several MB on loopback: the FIN
// of 512,000 bytes reaches us). argv: host
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t pipes;
static void on_pipe(int sig) { (void)sig; pipes++; }

static const char *name(int e) {
    switch (e) {
    case 0: return "ok";
    case EPIPE: return "EPIPE";
    case ECONNRESET: return "ECONNRESET";
    default: return strerrorname_np(e);
    }
}

static void sent(int fd) {
    int before = pipes;
    ssize_t r = send(fd, "abc", 3, 0);
    printf(" send %s%s", r >= 0 ? "ok" : name(errno), pipes > before ? "+SIGPIPE" : "");
}

static char buf[1 << 20];

/// 4 MiB from `s` to `c`, all read by `c`.
static void warm_up(int s, int c) {
    long left = 4 << 20, got = 0;
    fcntl(s, F_SETFL, O_NONBLOCK);
    while (got < 4 << 20) {
        if (left > 0) {
            ssize_t w = send(s, buf, left > (1 << 20) ? 1 << 20 : left, 0);
            if (w > 0)
                left -= w;
        }
        struct pollfd p = {c, POLLIN, 0};
        poll(&p, 1, 100);
        ssize_t r = recv(c, buf, sizeof buf, MSG_DONTWAIT);
        if (r > 0)
            got += r;
    }
}

int main(int argc, char **argv) {
    signal(SIGPIPE, on_pipe);
    // Well inside, just past and well beyond the initial window (the
    // kernel's edge: 127,999 bytes reach us with the FIN, 128,000 do not).
    const int sizes[] = {1000, 64000, 130000, 512000};
    for (int warm = 0; warm < 2; warm++)
    for (int i = warm ? 2 : 0; i < 4; i++)
        for (int how = 0; how < 2; how++) {
            struct sockaddr_in a = {.sin_family = AF_INET};
            socklen_t len = sizeof a;
            inet_pton(AF_INET, argv[1], &a.sin_addr);
            int l = socket(AF_INET, SOCK_STREAM, 0);
            if (bind(l, (void *)&a, sizeof a) || listen(l, 1) || getsockname(l, (void *)&a, &len)) {
                perror("listen");
                return 1;
            }
            int c = socket(AF_INET, SOCK_STREAM, 0);
            if (connect(c, (void *)&a, sizeof a)) {
                perror("connect");
                return 1;
            }
            int s = accept(l, NULL, NULL);
            if (warm)
                warm_up(s, c);
            send(c, "unread", 6, 0);
            fcntl(s, F_SETFL, O_NONBLOCK);
            ssize_t n = send(s, buf, sizes[i], 0);
            shutdown(s, SHUT_WR);
            close(s);
            struct pollfd p = {c, POLLIN | POLLOUT | POLLRDHUP, 0};
            poll(&p, 1, 5000);
            printf("%s%d %s: poll%s%s%s%s%s;", warm ? "warm " : "", sizes[i],
                   n == sizes[i] ? "sent" : "short",
                   p.revents & POLLIN ? " IN" : "", p.revents & POLLOUT ? " OUT" : "",
                   p.revents & POLLERR ? " ERR" : "", p.revents & POLLHUP ? " HUP" : "",
                   p.revents & POLLRDHUP ? " RDHUP" : "");
            if (how) {
                int e = -1;
                len = sizeof e;
                getsockopt(c, SOL_SOCKET, SO_ERROR, &e, &len);
                printf(" SO_ERROR %s;", name(e));
            }
            sent(c);
            sent(c);
            printf("\n");
            close(c);
            close(l);
        }
    printf("done\n");
    return 0;
}
