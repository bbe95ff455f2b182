// `shutdown_accept HOST PORT`: shutdown(2) of a listening socket, for each
// `how`, and what the calls after it say. Kernel TCP: SHUT_RD and
// SHUT_RDWR close the listener: 0; a thread blocked in accept wakes with
// EINVAL; later accepts say EINVAL; SO_ACCEPTCONN 0; the address stays
// bound; new connects are refused; a connection queued before is reset
// (its client's recv: ECONNRESET); the listener polls ready (the kernel
// says POLLOUT|POLLHUP, the library's epoll instance POLLIN: only
// "ready" is printed). SHUT_WR changes nothing: the blocked accept takes
// the next connection. A `how` out of range: EINVAL. One line per case.
// `shutdown_accept HOST PORT relisten`: listen again after SHUT_RD (the
// kernel's listens again: not readable until a client connects; the
// library's emulated listener cannot, EINVAL).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct sockaddr_in addr;

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "TIMEOUT: a call never returned\n";
    (void)!write(1, msg, sizeof msg - 1);
    _exit(3);
}

static const char *said(long r) {
    return r >= 0 ? "0" : strerrorname_np(errno);
}

static int listener(void) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&addr, sizeof addr) || listen(l, 8)) {
        perror("bind/listen");
        exit(1);
    }
    return l;
}

static int client(void) {
    int c = socket(AF_INET, SOCK_STREAM, 0);
    return connect(c, (struct sockaddr *)&addr, sizeof addr) ? -errno : c;
}

static void *acceptor(void *arg) {
    int c = accept(*(int *)arg, NULL, NULL);
    return (void *)(intptr_t)(c >= 0 ? c : -errno);
}

static const char *result(intptr_t r) {
    return r >= 0 ? "a connection" : strerrorname_np((int)-r);
}

// A thread blocked in accept, the listener shut down under it.
static void blocked(int how, const char *name) {
    int l = listener();
    pthread_t t;
    pthread_create(&t, NULL, acceptor, &l);
    usleep(100000); // (either way the same answer: EINVAL)
    long r = shutdown(l, how);
    printf("%s: shutdown %s", name, said(r));
    if (how == SHUT_WR) {
        int c = client();
        printf(", connect %s", c >= 0 ? "0" : strerrorname_np(-c));
    }
    void *got;
    pthread_join(t, &got);
    intptr_t a = (intptr_t)got;
    printf(", blocked accept %s", result(a));
    if (a >= 0) {
        close((int)a);
    } else {
        printf(", accept %s", said(accept(l, NULL, NULL)));
    }
    int on = -1;
    socklen_t len = sizeof on;
    getsockopt(l, SOL_SOCKET, SO_ACCEPTCONN, &on, &len);
    struct sockaddr_in name_now;
    len = sizeof name_now;
    getsockname(l, (struct sockaddr *)&name_now, &len);
    int kept = name_now.sin_port == addr.sin_port && name_now.sin_addr.s_addr == addr.sin_addr.s_addr;
    printf(", SO_ACCEPTCONN %d, name kept %d", on, kept);
    if (how != SHUT_WR) {
        int c = client();
        printf(", new connect %s", c >= 0 ? "0" : strerrorname_np(-c));
        if (c >= 0) close(c);
        struct pollfd p = {l, POLLIN | POLLOUT, 0};
        printf(", polls ready %d", poll(&p, 1, 0));
    }
    printf("\n");
    close(l);
}

// A connection queued in the backlog, the listener shut down.
static void queued(int how, const char *name) {
    int l = listener();
    int c = client();
    long r = shutdown(l, how);
    printf("%s queued: connect %s, shutdown %s", name, c >= 0 ? "0" : strerrorname_np(-c), said(r));
    printf(", accept %s", said(accept(l, NULL, NULL)));
    char b[4];
    printf(", client recv %s\n", said(recv(c, b, sizeof b, 0)));
    close(c);
    close(l);
}

// listen, shutdown(SHUT_RD), listen again: idle, then a client.
static void relisten(void) {
    int l = listener();
    long r = shutdown(l, SHUT_RD);
    printf("relisten: shutdown %s", said(r));
    printf(", listen %s", said(listen(l, 8)));
    struct pollfd p = {l, POLLIN, 0};
    printf(", idle polls readable %d", poll(&p, 1, 0));
    int c = client();
    printf(", connect %s", c >= 0 ? "0" : strerrorname_np(-c));
    int a = accept(l, NULL, NULL);
    printf(", accept %s", result(a >= 0 ? a : -errno));
    if (a >= 0) close(a);
    printf(", then polls readable %d\n", poll(&p, 1, 0));
    if (c >= 0) close(c);
    close(l);
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[3], "relisten") == 0) {
        addr.sin_family = AF_INET;
        addr.sin_port = htons(atoi(argv[2]));
        inet_pton(AF_INET, argv[1], &addr.sin_addr);
        relisten();
        return 0;
    }
    if (argc != 3) return 2;
    addr.sin_family = AF_INET;
    addr.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &addr.sin_addr);
    setvbuf(stdout, NULL, _IONBF, 0);
    signal(SIGALRM, on_alarm);
    alarm(20);
    blocked(SHUT_RD, "SHUT_RD");
    blocked(SHUT_RDWR, "SHUT_RDWR");
    queued(SHUT_RD, "SHUT_RD");
    queued(SHUT_RDWR, "SHUT_RDWR");
    blocked(SHUT_WR, "SHUT_WR");
    int l = listener();
    printf("how 7: shutdown %s\n", said(shutdown(l, 7)));
    close(l);
    return 0;
}
