// spin_eintr HOST PORT tcp|udp: a timer signal (SIGALRM, 20 ms after the
// wait begins) during poll, select and epoll_wait with a 400 ms timeout on
// a socket that just sent and is answered by nobody, with the handler
// installed without and with SA_RESTART: each such wait must end with
// EINTR (the kernel never restarts them). Then blocking receives: without
// SA_RESTART EINTR; with it the call goes on and gets the answer a second
// thread (SIGALRM blocked there) sends 300 ms later. Run with SHMNET_SPIN_US large, the signal
// lands in the library's spin. Prints counts (compared with kernel's).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define N 8
static volatile sig_atomic_t hits;
static void on_alarm(int s) { (void)s; hits++; }

static int a, b; // a waits; b is the silent peer
static struct sockaddr_in sa_a, sa_b;
static int udp;

static void die(const char *what) { perror(what); exit(1); }

static void handler(int restart) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGALRM, &sa, 0)) die("sigaction");
}

static void alarm_soon(void) {
    struct itimerval it = {{0, 0}, {0, 20 * 1000}};
    setitimer(ITIMER_REAL, &it, 0);
}

// a sends a request (so its wait spins for the answer); b takes it.
static void request(void) {
    char c = 'q', buf[64];
    if (udp) {
        if (sendto(a, &c, 1, 0, (void *)&sa_b, sizeof sa_b) != 1) die("sendto");
        if (recv(b, buf, sizeof buf, 0) != 1) die("recv b");
    } else {
        if (send(a, &c, 1, 0) != 1) die("send");
        if (recv(b, buf, sizeof buf, 0) != 1) die("recv b");
    }
}

static void answer(void) {
    char c = 'a';
    if (udp) {
        if (sendto(b, &c, 1, 0, (void *)&sa_a, sizeof sa_a) != 1) die("sendto b");
    } else if (send(b, &c, 1, 0) != 1) die("send b");
}

static void *answer_later(void *arg) {
    (void)arg;
    struct timespec t = {0, 300 * 1000 * 1000};
    nanosleep(&t, 0);
    answer();
    return 0;
}

static int wait_once(const char *how, int ep) {
    if (!strcmp(how, "poll")) {
        struct pollfd p = {a, POLLIN, 0};
        return poll(&p, 1, 400);
    }
    if (!strcmp(how, "ppoll")) {
        // The caller's mask for the wait: SIGALRM unblocked (the thread's
        // own mask blocks nothing either).
        struct pollfd p = {a, POLLIN, 0};
        struct timespec ts = {0, 400 * 1000 * 1000};
        sigset_t none;
        sigemptyset(&none);
        return ppoll(&p, 1, &ts, &none);
    }
    if (!strcmp(how, "select")) {
        fd_set r;
        FD_ZERO(&r);
        FD_SET(a, &r);
        struct timeval tv = {0, 400 * 1000};
        return select(a + 1, &r, 0, 0, &tv);
    }
    struct epoll_event ev;
    return epoll_wait(ep, &ev, 1, 400);
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    udp = !strcmp(argv[3], "udp");
    int port = atoi(argv[2]);
    memset(&sa_a, 0, sizeof sa_a);
    sa_a.sin_family = AF_INET;
    if (inet_pton(AF_INET, argv[1], &sa_a.sin_addr) != 1) die("address");
    sa_b = sa_a;
    if (udp) {
        sa_a.sin_port = htons(port);
        sa_b.sin_port = htons(port + 1);
        a = socket(AF_INET, SOCK_DGRAM, 0);
        b = socket(AF_INET, SOCK_DGRAM, 0);
        if (bind(a, (void *)&sa_a, sizeof sa_a) || bind(b, (void *)&sa_b, sizeof sa_b)) die("bind");
    } else {
        sa_b.sin_port = htons(port);
        int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(l, (void *)&sa_b, sizeof sa_b) || listen(l, 4)) die("listen");
        a = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(a, (void *)&sa_b, sizeof sa_b)) die("connect");
        b = accept(l, 0, 0);
        if (b < 0) die("accept");
        close(l);
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = a};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, a, &ev)) die("epoll_ctl");
    const char *hows[] = {"poll", "ppoll", "select", "epoll"};
    for (int restart = 0; restart < 2; restart++) {
        handler(restart);
        for (unsigned h = 0; h < sizeof hows / sizeof *hows; h++) {
            int eintr = 0, other = 0;
            for (int i = 0; i < N; i++) {
                request();
                hits = 0;
                alarm_soon();
                int n = wait_once(hows[h], ep);
                int e = errno;
                if (n < 0 && e == EINTR) eintr++;
                else other++;
                // (A wait that timed out saw the signal too, or will.)
                while (!hits) pause();
            }
            printf("%s %s: EINTR %d of %d, other %d\n", hows[h],
                   restart ? "SA_RESTART" : "no SA_RESTART", eintr, N, other);
        }
        // ppoll with a mask that blocks SIGALRM: the signal stays pending
        // through the whole call, which times out (its handler runs as it
        // returns).
        int timed_out = 0;
        for (int i = 0; i < 2; i++) {
            request();
            hits = 0;
            alarm_soon();
            struct pollfd p = {a, POLLIN, 0};
            struct timespec ts = {0, 100 * 1000 * 1000};
            sigset_t alrm;
            sigemptyset(&alrm);
            sigaddset(&alrm, SIGALRM);
            int n = ppoll(&p, 1, &ts, &alrm);
            if (n == 0) timed_out++;
            while (!hits) pause();
        }
        printf("ppoll blocking it %s: timed out %d of 2\n",
               restart ? "SA_RESTART" : "no SA_RESTART", timed_out);
        // A blocking receive: EINTR without SA_RESTART; with it, the
        // answer that comes 300 ms later.
        int eintr = 0, data = 0;
        for (int i = 0; i < N; i++) {
            request();
            // The answering thread blocks SIGALRM (it inherits the mask),
            // so that the receiving thread is the one that takes it.
            pthread_t t;
            sigset_t alrm, old;
            sigemptyset(&alrm);
            sigaddset(&alrm, SIGALRM);
            pthread_sigmask(SIG_BLOCK, &alrm, &old);
            pthread_create(&t, 0, answer_later, 0);
            pthread_sigmask(SIG_SETMASK, &old, 0);
            hits = 0;
            alarm_soon();
            char buf[64];
            ssize_t n = recv(a, buf, sizeof buf, 0);
            int e = errno;
            if (n < 0 && e == EINTR) {
                eintr++;
                n = recv(a, buf, sizeof buf, 0); // the answer, for the next round
            }
            if (n == 1 && buf[0] == 'a') data++;
            pthread_join(t, 0);
        }
        printf("recv %s: EINTR %d of %d, answers %d\n",
               restart ? "SA_RESTART" : "no SA_RESTART", eintr, N, data);
    }
    return 0;
}
