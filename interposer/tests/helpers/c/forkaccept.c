/* A postmaster-like server (issue 11, found with PostgreSQL 15): a blocking
 * listener watched with select(), then accept(), a child forked per
 * connection that serves it (the parent closes it); signals blocked except
 * inside select(). argv: ADDR PORT SECONDS. After SECONDS it prints whether
 * any accept() took over a second after select() said readable, and how
 * often the listener still looks readable with no client connecting (a
 * handed-over parked connection whose one-shot event was never consumed
 * kept it readable for ever). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}
static void reap(int s) {
    (void)s;
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
}
int main(int argc, char **argv) {
    if (argc < 4) return 2;
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    if (bind(ls, (void *)&a, sizeof a) || listen(ls, 128)) { perror("bind/listen"); return 1; }
    struct sigaction sa = {.sa_handler = reap};
    sigfillset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &all, NULL);
    printf("ready\n");
    fflush(stdout);
    double end = now() + atof(argv[3]);
    int slow = 0, accepted = 0;
    while (now() < end) {
        fd_set r;
        FD_ZERO(&r);
        FD_SET(ls, &r);
        struct timeval tv = {0, 100000};
        sigprocmask(SIG_SETMASK, &none, NULL);
        int n = select(ls + 1, &r, NULL, NULL, &tv);
        sigprocmask(SIG_SETMASK, &all, NULL);
        if (n <= 0) continue;
        double t0 = now();
        int c = accept(ls, NULL, NULL);
        if (now() - t0 > 1.0) slow++;
        if (c < 0) continue;
        accepted++;
        if (fork() == 0) {
            close(ls);
            char buf[4096];
            for (;;) {
                ssize_t k = read(c, buf, sizeof buf);
                if (k <= 0) _exit(0);
                if (write(c, buf, k) != k) _exit(1);
            }
        }
        close(c);
    }
    int readable = 0;
    for (int i = 0; i < 10; i++) {
        fd_set r;
        FD_ZERO(&r);
        FD_SET(ls, &r);
        struct timeval tv = {0, 0};
        if (select(ls + 1, &r, NULL, NULL, &tv) > 0) readable++;
        usleep(20000);
    }
    printf("accepted %d slow %d readable_after %d\n", accepted, slow, readable);
    fflush(stdout);
    return 0;
}
