/*
 * fdlimit LIMIT N ADDR PORT [epoll]: how many TCP connections fit under
 * `ulimit -n LIMIT` (soft = hard). Sets RLIMIT_NOFILE to LIMIT, forks:
 * the child is the server (listens on ADDR:PORT, non-blocking accept until
 * the client says how many it opened and that many are accepted, or
 * accept fails for want of fds), the parent the client (blocking connects
 * until N or the first failure). Both processes hold only their
 * connections and three or four fds of their own (stdio, the pipe, the
 * listener), so what fits is what the transport costs in fds.
 *
 * Then every accepted connection carries 8 bytes each way (the client's
 * index, answered by the server with its bitwise complement), checked.
 *
 * With `epoll` the server is an event loop: one epoll set (an fd that
 * kernel TCP's server holds too) holding the listener, the pipe and every
 * accepted connection, on which it sleeps while accepting and while it
 * answers (a set whose members are connections: what made the library's
 * epoll waker before decision 57).
 *
 * Prints "opened O accepted A checked C" (exit 0), or "error ..." (exit 1)
 * for anything but running out of fds.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what)
{
    printf("error %s: %s\n", what, strerror(errno));
    fflush(stdout);
    _exit(1);
}

static int full(int e)
{
    return e == EMFILE || e == ENFILE || e == ENOBUFS;
}

static void xfer(int fd, void *b, size_t n, int out)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = out ? write(fd, (char *)b + done, n - done) : read(fd, (char *)b + done, n - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            die(out ? "write" : "read");
        done += (size_t)r;
    }
}

static void ctl(int ep, int op, int fd, uint32_t events, uint64_t data)
{
    struct epoll_event ev = {.events = events, .data.u64 = data};
    if (epoll_ctl(ep, op, fd, &ev) < 0)
        die("epoll_ctl");
}

/* The server as an event loop on one epoll set (`epoll`): the listener's
 * data is n, the pipe's n + 1, connection i's i. */
static void epoll_server(int l, int from_client, int to_client, int n, int *fds)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    ctl(ep, EPOLL_CTL_ADD, l, EPOLLIN, (uint64_t)n);
    ctl(ep, EPOLL_CTL_ADD, from_client, EPOLLIN, (uint64_t)n + 1);
    struct epoll_event evs[64];
    int accepted = 0, opened = -1, stop = 0;
    while (!stop && (opened < 0 || accepted < opened) && accepted < n) {
        int r = epoll_wait(ep, evs, 64, 2000);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            die("epoll_wait (accepting)");
        if (r == 0 && opened >= 0)
            break; /* told, and nothing more comes */
        for (int e = 0; e < r; e++) {
            if (evs[e].data.u64 == (uint64_t)n + 1) {
                xfer(from_client, &opened, sizeof opened, 0);
                ctl(ep, EPOLL_CTL_DEL, from_client, 0, 0);
                continue;
            }
            if (evs[e].data.u64 != (uint64_t)n)
                continue; /* a connection's first bytes: answered below */
            for (;;) {
                int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0 && errno == EAGAIN)
                    break;
                if (c < 0 && full(errno)) {
                    stop = opened >= 0;
                    break;
                }
                if (c < 0)
                    die("accept");
                ctl(ep, EPOLL_CTL_ADD, c, EPOLLIN, (uint64_t)accepted);
                fds[accepted++] = c;
                if (accepted == n)
                    break;
            }
        }
    }
    if (opened < 0) {
        xfer(from_client, &opened, sizeof opened, 0);
        ctl(ep, EPOLL_CTL_DEL, from_client, 0, 0);
    }
    /* (A listener with connections it cannot take stays readable.) */
    ctl(ep, EPOLL_CTL_DEL, l, 0, 0);
    xfer(to_client, &accepted, sizeof accepted, 1);
    int answered = 0;
    while (answered < accepted) {
        int r = epoll_wait(ep, evs, 64, 10000);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            die("epoll_wait (answers)");
        for (int e = 0; e < r; e++) {
            int i = (int)evs[e].data.u64;
            if (i < 0 || i >= accepted)
                die("epoll_wait (data)");
            uint64_t v;
            xfer(fds[i], &v, sizeof v, 0);
            v = ~v;
            xfer(fds[i], &v, sizeof v, 1);
            ctl(ep, EPOLL_CTL_DEL, fds[i], 0, 0);
            answered++;
        }
    }
    char b;
    while (read(from_client, &b, 1) > 0 || errno == EINTR)
        ;
}

int main(int argc, char **argv)
{
    if (argc != 5 && !(argc == 6 && !strcmp(argv[5], "epoll"))) {
        fprintf(stderr, "usage: fdlimit LIMIT N ADDR PORT [epoll]\n");
        return 2;
    }
    int use_epoll = argc == 6;
    int limit = atoi(argv[1]), n = atoi(argv[2]);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[4]))};
    if (inet_pton(AF_INET, argv[3], &sa.sin_addr) != 1)
        return 2;
    alarm(60);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IONBF, 0);
    struct rlimit rl = {.rlim_cur = (rlim_t)limit, .rlim_max = (rlim_t)limit};
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("setrlimit");
    int p[2]; /* client -> server: how many it opened, then EOF when done */
    int q[2]; /* server -> client: listening, then how many it accepted */
    if (pipe2(p, O_CLOEXEC) < 0 || pipe2(q, O_CLOEXEC) < 0)
        die("pipe");
    int *fds = calloc((size_t)n, sizeof *fds);
    if (!fds)
        die("calloc");
    /* Forked before the listener is made (as kvbench): a listener a
     * process shares with its child costs the library a parking queue
     * (docs/benchmarks.md). */
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) { /* server */
        close(p[1]);
        close(q[0]);
        int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (l < 0)
            die("socket (listener)");
        int one = 1;
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 4096) < 0)
            die("bind/listen");
        xfer(q[1], &one, sizeof one, 1);
        int one_fl = 1;
        ioctl(l, FIONBIO, &one_fl);
        int accepted = 0, opened = -1, stop = 0;
        if (use_epoll) {
            epoll_server(l, p[0], q[1], n, fds);
            _exit(0);
        }
        while (!stop && (opened < 0 || accepted < opened)) {
            struct pollfd pf[2] = {{.fd = l, .events = POLLIN}, {.fd = p[0], .events = POLLIN}};
            if (poll(pf, opened < 0 ? 2 : 1, 2000) == 0 && opened >= 0)
                break; /* told, and nothing more comes */
            if (pf[1].revents && opened < 0)
                xfer(p[0], &opened, sizeof opened, 0);
            for (;;) {
                int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0 && errno == EAGAIN)
                    break;
                if (c < 0 && full(errno)) {
                    stop = opened >= 0; /* wait to be told first: the count is reported either way */
                    break;
                }
                if (c < 0)
                    die("accept");
                fds[accepted++] = c;
                if (accepted == n)
                    break;
            }
            if (stop || accepted == n)
                break;
        }
        if (opened < 0)
            xfer(p[0], &opened, sizeof opened, 0);
        xfer(q[1], &accepted, sizeof accepted, 1);
        for (int i = 0; i < accepted; i++) {
            uint64_t v;
            xfer(fds[i], &v, sizeof v, 0);
            v = ~v;
            xfer(fds[i], &v, sizeof v, 1);
        }
        /* Held until the client has its answers: those not accepted are
         * reset when the listener goes. */
        char b;
        while (read(p[0], &b, 1) > 0 || errno == EINTR)
            ;
        _exit(0);
    }
    close(p[0]);
    close(q[1]);
    int ready;
    xfer(q[0], &ready, sizeof ready, 0);
    int opened = 0;
    for (; opened < n; opened++) {
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c < 0 && full(errno))
            break;
        if (c < 0)
            die("socket");
        if (connect(c, (struct sockaddr *)&sa, sizeof sa) < 0) {
            if (full(errno)) {
                close(c);
                break;
            }
            die("connect");
        }
        fds[opened] = c;
    }
    xfer(p[1], &opened, sizeof opened, 1);
    int accepted;
    xfer(q[0], &accepted, sizeof accepted, 0);
    /* Every connection gets its index; the server answers those it
     * accepted (whichever they are), each with the complement. */
    for (int i = 0; i < opened; i++) {
        uint64_t v = 0x5eed000000000000ull | (uint64_t)i;
        xfer(fds[i], &v, sizeof v, 1);
    }
    struct pollfd *pf = calloc((size_t)opened + 1, sizeof *pf);
    if (!pf)
        die("calloc");
    for (int i = 0; i < opened; i++)
        pf[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    int checked = 0, answered = 0;
    while (answered < accepted) {
        int r = poll(pf, (nfds_t)opened, 10000);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            die("poll (answers)");
        for (int i = 0; i < opened; i++) {
            if (!pf[i].revents)
                continue;
            uint64_t w;
            xfer(fds[i], &w, sizeof w, 0);
            checked += w == ~(0x5eed000000000000ull | (uint64_t)i);
            answered++;
            pf[i].fd = -1;
        }
    }
    close(p[1]);
    int st;
    if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        die("server");
    printf("opened %d accepted %d checked %d\n", opened, accepted, checked);
    return 0;
}
