/* Forks while other threads are busy on an emulated socket.
 *
 * usage: forkbusy HOST PORT CHILD_HOST CHILD_PORT ROUNDS
 *
 * Binds and listens on HOST:PORT (an emulated listener), starts threads
 * that call getsockname/getsockopt on it in a loop (so they hold or wait on
 * the library's registry lock all the time), then forks ROUNDS times. Each
 * child makes the registry writes a real child makes (close of the
 * listener, or close_range(3, ~0U) as python's subprocess does; then
 * socket/bind/listen/close of a listener of its own on CHILD_HOST:CHILD_PORT)
 * and exits 0. A child that has not exited within 5 s is hung: it is killed
 * and the program exits 2. The parent checks its listener after every round
 * and, at the end, carries a few bytes over a connection to it.
 * Prints "ok ROUNDS" on success. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define THREADS 3

static int lfd;
static volatile int stop;
static struct sockaddr_in laddr;

static void *hammer(void *arg) {
    (void)arg;
    while (!stop) {
        struct sockaddr_in sa;
        socklen_t l = sizeof sa;
        getsockname(lfd, (struct sockaddr *)&sa, &l);
        int type;
        l = sizeof type;
        getsockopt(lfd, SOL_SOCKET, SO_TYPE, &type, &l);
    }
    return NULL;
}

static struct sockaddr_in addr(const char *host, const char *port) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)atoi(port));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", host);
        exit(1);
    }
    return sa;
}

/* The child: registry writes only, exit status says which step failed. */
static void child(int round, struct sockaddr_in caddr) {
    if (round % 2 == 0) {
        if (close(lfd) != 0)
            _exit(10);
    } else {
        if (close_range(3, ~0U, 0) != 0)
            _exit(11);
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        _exit(12);
    if (bind(s, (struct sockaddr *)&caddr, sizeof caddr) != 0)
        _exit(13);
    if (listen(s, 1) != 0)
        _exit(14);
    struct sockaddr_in got;
    socklen_t l = sizeof got;
    if (getsockname(s, (struct sockaddr *)&got, &l) != 0 || got.sin_port != caddr.sin_port)
        _exit(15);
    if (close(s) != 0)
        _exit(16);
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s HOST PORT CHILD_HOST CHILD_PORT ROUNDS\n", argv[0]);
        return 1;
    }
    laddr = addr(argv[1], argv[2]);
    struct sockaddr_in caddr = addr(argv[3], argv[4]);
    int rounds = atoi(argv[5]);

    lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&laddr, sizeof laddr) != 0 || listen(lfd, 4) != 0) {
        perror("listener");
        return 1;
    }
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, hammer, NULL);

    for (int r = 0; r < rounds; r++) {
        pid_t p = fork();
        if (p < 0) {
            perror("fork");
            return 1;
        }
        if (p == 0)
            child(r, caddr);
        int st = 0, waited = 0;
        struct timespec ms = {0, 1000000};
        while (waitpid(p, &st, WNOHANG) == 0) {
            nanosleep(&ms, NULL);
            if (++waited == 5000) {
                printf("round %d: child %d hung for 5s after fork\n", r, (int)p);
                fflush(stdout);
                kill(p, SIGKILL);
                waitpid(p, &st, 0);
                return 2;
            }
        }
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            printf("round %d: child failed (status %#x)\n", r, st);
            return 3;
        }
        struct sockaddr_in got;
        socklen_t l = sizeof got;
        if (getsockname(lfd, (struct sockaddr *)&got, &l) != 0 || got.sin_port != laddr.sin_port ||
            got.sin_addr.s_addr != laddr.sin_addr.s_addr) {
            printf("round %d: parent's listener lost its name\n", r);
            return 4;
        }
    }
    stop = 1;
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);

    /* The parent still works: a connection to its own listener. */
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&laddr, sizeof laddr) != 0) {
        perror("connect");
        return 5;
    }
    int a = accept(lfd, NULL, NULL);
    if (a < 0) {
        perror("accept");
        return 5;
    }
    char buf[8] = {0};
    if (send(c, "ping", 4, 0) != 4 || recv(a, buf, sizeof buf, 0) != 4 || memcmp(buf, "ping", 4)) {
        printf("no data over the parent's connection\n");
        return 6;
    }
    close(a);
    close(c);
    close(lfd);
    printf("ok %d\n", rounds);
    return 0;
}
