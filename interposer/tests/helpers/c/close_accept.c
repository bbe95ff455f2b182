// `close_accept HOST PORT ROUNDS`: thread A blocks in accept4 on listener
// L; main closes L, makes an epoll set that lands on L's number, registers
// an eventfd there (EPOLLET, data 0xAAAA) and signals it, then connects to
// the old listener's address. Kernel TCP: A's accept works on the file it
// resolved at entry (the closed listener) and returns the connection; the
// new epoll set is untouched and reports exactly the eventfd's event.
// Prints "rounds N accepted A intact I" (the review of fd14, closerace.c).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *host;
static int port;
static int listener_fd;

static void *acceptor(void *arg) {
    (void)arg;
    intptr_t c = accept4(listener_fd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) fprintf(stderr, "accept4: %s\n", strerror(errno));
    return (void *)c;
}

static struct sockaddr_in addr(void) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    return a;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: close_accept HOST PORT ROUNDS\n"); return 2; }
    host = argv[1];
    port = atoi(argv[2]);
    int rounds = atoi(argv[3]), accepted = 0, intact = 0;
    for (int i = 0; i < rounds; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = addr();
        if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 16)) { perror("bind/listen"); return 2; }
        listener_fd = s;
        pthread_t t;
        pthread_create(&t, NULL, acceptor, NULL);
        usleep(100000); // A is (most likely) waiting in accept4 by now
        close(s);
        int ep = epoll_create1(EPOLL_CLOEXEC);
        if (ep != s) fprintf(stderr, "round %d: the epoll set is fd %d, not %d\n", i, ep, s);
        int ev = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        struct epoll_event e = {.events = EPOLLIN | EPOLLET, .data.u64 = 0xAAAA};
        epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e);
        uint64_t v = 1;
        if (write(ev, &v, 8) != 8) return 2;
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c, (struct sockaddr *)&a, sizeof a)) fprintf(stderr, "round %d: connect: %s\n", i, strerror(errno));
        void *got;
        pthread_join(t, &got); // (kernel TCP: the connection)
        if ((intptr_t)got >= 0) { accepted++; close((int)(intptr_t)got); }
        struct epoll_event out[8];
        int n = epoll_wait(ep, out, 8, 0);
        if (n == 1 && out[0].data.u64 == 0xAAAA) intact++;
        else fprintf(stderr, "round %d: the program's epoll set reported %d events\n", i, n);
        close(c); close(ep); close(ev);
    }
    printf("rounds %d accepted %d intact %d\n", rounds, accepted, intact);
    return 0;
}
