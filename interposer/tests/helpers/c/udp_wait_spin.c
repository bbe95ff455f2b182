/* Waiters in poll, select and epoll_wait on UDP sockets
 * (interposer/tests/datagrams.rs, `multiplexed_waiters_lose_nothing`):
 * a wait that spins with the sockets' doorbell flags down (decision 42)
 * loses no datagram and no wake-up, and reports a socket readable exactly
 * when a receive finds a datagram. Run against emulated and kernel UDP;
 * the lines printed must be the same.
 *
 *   udp_wait_spin HOST
 *
 * For each waiter (poll, select, epoll):
 * 1. ping-pong: 2,000 round trips between a forked echo server waiting in
 *    epoll_wait (timeout -1) and a client waiting in the waiter, both
 *    sleeping a random while (none, a few us, up to 300 us, now and then
 *    2 ms) before they send, so each datagram is found by a spin, in the
 *    middle of a flag going up, or after a sleep. After each report the
 *    socket's datagram is there (MSG_DONTWAIT), then none is (the waiter
 *    with a zero timeout says not readable, the receive says EAGAIN). A
 *    lost wake-up hangs the echo server (the harness's timeout fails it)
 *    or leaves the client without an answer for 20 s (it fails).
 * 2. stream: a forked child sends 20,000 datagrams paced in bursts; the
 *    parent waits in the waiter and drains with MSG_DONTWAIT after each
 *    report, checking every datagram byte for byte and in order; a
 *    report with nothing to receive fails.
 * 3. idle: a wait of 50 ms with nothing sent reports nothing.
 *
 * Prints "<waiter> pingpong 2000", "<waiter> stream intact",
 * "<waiter> idle 0" for each; exits 1 with a message on a bad datagram or
 * a report with nothing to receive.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum waiter { POLL, SELECT, EPOLL };
static const char *names[] = {"poll", "select", "epoll"};

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void fail(const char *waiter, const char *what, uint32_t seq) {
    fprintf(stderr, "udp_wait_spin %s: %s (seq %u)\n", waiter, what, seq);
    exit(1);
}

static size_t make(unsigned char *b, uint32_t seq) {
    size_t len = 8 + (seq * 2654435761u >> 7) % 1193;
    memcpy(b, &seq, 4);
    uint32_t l = (uint32_t)len;
    memcpy(b + 4, &l, 4);
    for (size_t i = 8; i < len; i++)
        b[i] = (unsigned char)(seq * 31 + i * 7);
    return len;
}

/* With NO_KERNEL_UDP set (the emulated runs): fails if a kernel UDP
 * socket holds `port` (network byte order), the proof that shared memory
 * carried the datagrams. */
static void no_kernel_udp(uint16_t port) {
    if (!getenv("NO_KERNEL_UDP"))
        return;
    FILE *f = fopen("/proc/net/udp", "r");
    if (!f)
        die("/proc/net/udp");
    char line[512], want[16];
    snprintf(want, sizeof want, ":%04X ", ntohs(port));
    while (fgets(line, sizeof line, f)) {
        char *local = strchr(line, ':'); /* after "sl:" */
        if (local && strstr(local + 1, want) && strstr(local + 1, want) < local + 16)
            fail("kernel", "a kernel UDP socket holds the port", ntohs(port));
    }
    fclose(f);
}

static int bound(struct sockaddr_in *a) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0)
        die("socket");
    if (bind(s, (struct sockaddr *)a, sizeof *a))
        die("bind");
    return s;
}

static void pause_randomly(unsigned *seed) {
    unsigned r = rand_r(seed) % 100;
    struct timespec t = {0, 0};
    if (r < 40)
        return;
    if (r < 70)
        t.tv_nsec = 1000 + rand_r(seed) % 9000;
    else if (r < 98)
        t.tv_nsec = 10000 + rand_r(seed) % 290000;
    else
        t.tv_nsec = 2000000;
    nanosleep(&t, NULL);
}

/* Waits for `s` to be readable, up to `ms` (-1: forever) with `how`
 * (`ep`: an epoll set holding `s`, level-triggered): 1 readable, 0 not. */
static int wait_readable(enum waiter how, int s, int ep, int ms) {
    int n;
    for (;;) {
        if (how == POLL) {
            struct pollfd p = {.fd = s, .events = POLLIN};
            n = poll(&p, 1, ms);
            if (n > 0 && !(p.revents & POLLIN))
                fail(names[how], "poll reported something else", p.revents);
        } else if (how == SELECT) {
            fd_set r;
            FD_ZERO(&r);
            FD_SET(s, &r);
            struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
            n = select(s + 1, &r, NULL, NULL, ms < 0 ? NULL : &tv);
            if (n > 0 && !FD_ISSET(s, &r))
                fail(names[how], "select reported another fd", 0);
        } else {
            struct epoll_event e;
            n = epoll_wait(ep, &e, 1, ms);
            if (n > 0 && (e.data.fd != s || !(e.events & EPOLLIN)))
                fail(names[how], "epoll reported something else", e.events);
        }
        if (n >= 0)
            return n > 0;
        if (errno != EINTR)
            die("wait");
    }
}

static int epoll_of(int s) {
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN, .data.fd = s};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, s, &e))
        die("epoll");
    return ep;
}

/* A report must mean a datagram: received without waiting. */
static ssize_t take(const char *w, int s, unsigned char *b, size_t cap) {
    ssize_t n = recv(s, b, cap, MSG_DONTWAIT);
    if (n < 0 && errno == EAGAIN)
        fail(w, "reported readable, nothing to receive", 0);
    if (n < 0)
        die("recv");
    return n;
}

static void pingpong(enum waiter how, struct sockaddr_in *srv, int rounds) {
    const char *w = names[how];
    int ready[2];
    if (pipe(ready))
        die("pipe");
    pid_t child = fork();
    if (child == 0) {
        /* The echo server (its own socket: a forked child does not
         * receive on one its parent keeps): epoll_wait forever, answer
         * each datagram. */
        int s = bound(srv);
        socklen_t al = sizeof *srv;
        getsockname(s, (struct sockaddr *)srv, &al);
        if (write(ready[1], &srv->sin_port, sizeof srv->sin_port) != sizeof srv->sin_port)
            die("write");
        no_kernel_udp(srv->sin_port);
        int ep = epoll_of(s);
        unsigned seed = 7;
        unsigned char b[1300];
        for (int i = 0; i < rounds; i++) {
            wait_readable(EPOLL, s, ep, -1);
            struct sockaddr_in from;
            socklen_t fl = sizeof from;
            ssize_t n = recvfrom(s, b, sizeof b, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
            if (n < 0)
                fail("echo", "reported readable, nothing to receive", i);
            pause_randomly(&seed);
            sendto(s, b, n, 0, (struct sockaddr *)&from, fl);
        }
        _exit(0);
    }
    if (read(ready[0], &srv->sin_port, sizeof srv->sin_port) != sizeof srv->sin_port)
        die("read");
    close(ready[0]);
    close(ready[1]);
    struct sockaddr_in any = {.sin_family = AF_INET, .sin_addr = srv->sin_addr};
    int c = bound(&any);
    int ep = how == EPOLL ? epoll_of(c) : -1;
    unsigned seed = 11;
    unsigned char b[1300], want[1300];
    for (uint32_t i = 0; i < (uint32_t)rounds; i++) {
        size_t len = make(want, i);
        pause_randomly(&seed);
        if (sendto(c, want, len, 0, (struct sockaddr *)srv, sizeof *srv) < 0)
            die("sendto");
        /* (20 s: a lost wake-up, or an echo server that failed.) */
        if (!wait_readable(how, c, ep, 20000))
            fail(w, "no answer in 20 s", i);
        ssize_t n = take(w, c, b, sizeof b);
        if ((size_t)n != len || memcmp(b, want, len))
            fail(w, "wrong answer", i);
        if (wait_readable(how, c, ep, 0))
            fail(w, "readable with nothing queued", i);
        if (recv(c, b, sizeof b, MSG_DONTWAIT) >= 0 || errno != EAGAIN)
            fail(w, "a datagram too many", i);
    }
    int st;
    waitpid(child, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st))
        fail(w, "echo server failed", 0);
    printf("%s pingpong %d\n", w, rounds);
    close(c);
    if (ep >= 0)
        close(ep);
}

static void stream(enum waiter how, struct sockaddr_in *srv, uint32_t count) {
    const char *w = names[how];
    int s = bound(srv);
    socklen_t al = sizeof *srv;
    getsockname(s, (struct sockaddr *)srv, &al);
    no_kernel_udp(srv->sin_port);
    int rcv = 4 << 20;
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    int ep = how == EPOLL ? epoll_of(s) : -1;
    pid_t child = fork();
    if (child == 0) {
        struct sockaddr_in any = {.sin_family = AF_INET, .sin_addr = srv->sin_addr};
        int c = bound(&any);
        unsigned char b[1300];
        unsigned seed = 5;
        for (uint32_t i = 0; i < count; i++) {
            size_t len = make(b, i);
            sendto(c, b, len, 0, (struct sockaddr *)srv, sizeof *srv);
            if (i % 64 == 63)
                pause_randomly(&seed);
        }
        /* The end marker, until the receiver says it got it. */
        for (int k = 0; k < 2000; k++) {
            uint32_t end = 0xffffffff;
            sendto(c, &end, 4, 0, (struct sockaddr *)srv, sizeof *srv);
            struct pollfd p = {.fd = c, .events = POLLIN};
            if (poll(&p, 1, 5) > 0)
                break;
        }
        _exit(0);
    }
    unsigned char b[1300], want[1300];
    int64_t last = -1;
    for (;;) {
        if (!wait_readable(how, s, ep, -1))
            fail(w, "a wait forever returned nothing", 0);
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(s, b, sizeof b, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
        if (n < 0 && errno == EAGAIN)
            fail(w, "reported readable, nothing to receive", (uint32_t)last);
        int done = 0;
        while (n >= 0) {
            uint32_t seq;
            if (n < 4)
                fail(w, "short datagram", 0);
            memcpy(&seq, b, 4);
            if (seq == 0xffffffff) {
                sendto(s, "x", 1, 0, (struct sockaddr *)&from, fl);
                done = 1;
                break;
            }
            if ((int64_t)seq <= last || seq >= count)
                fail(w, "out of order", seq);
            size_t len = make(want, seq);
            if ((size_t)n != len || memcmp(b, want, len))
                fail(w, "torn or wrong datagram", seq);
            last = seq;
            fl = sizeof from;
            n = recvfrom(s, b, sizeof b, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
        }
        if (done)
            break;
    }
    int st;
    waitpid(child, &st, 0);
    printf("%s stream intact\n", w);
    fprintf(stderr, "%s stream: last %lld of %u\n", w, (long long)last, count);
    /* Idle: nothing comes, nothing is reported. */
    while (recv(s, b, sizeof b, MSG_DONTWAIT) >= 0)
        ;
    printf("%s idle %d\n", w, wait_readable(how, s, ep, 50));
    close(s);
    if (ep >= 0)
        close(ep);
}

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IONBF, 0);
    for (int how = POLL; how <= EPOLL; how++) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
        inet_pton(AF_INET, argv[1], &a.sin_addr);
        pingpong(how, &a, 2000);
        a.sin_port = 0;
        stream(how, &a, 20000);
    }
    return 0;
}
