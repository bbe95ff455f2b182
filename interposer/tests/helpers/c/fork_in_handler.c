/* fork_in_handler HOST PORT: a 1 ms SIGALRM whose handler forks (the child
 * _exits at once) while the main thread blocks in recv on a bound UDP
 * socket, and a child sends 3000 numbered datagrams 100 us apart. The
 * handler often interrupts the library inside a hooked call (holding the
 * socket registry's lock): fork's prepare handler must not wait for that
 * lock for ever (review s34 udpshare16 #1). Prints "got N forks>0 K". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile long forks;
static void on_alarm(int sig) {
    (void)sig;
    int e = errno;
    pid_t c = fork();
    if (c == 0) _exit(0);
    if (c > 0) forks++;
    errno = e;
}
static void reap(int sig) {
    (void)sig;
    int e = errno;
    while (waitpid(-1, 0, WNOHANG) > 0) {}
    errno = e;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    a.sin_port = htons(atoi(argv[2]));
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (bind(s, (void *)&a, sizeof a)) { perror("bind"); return 1; }
    pid_t sender = fork();
    if (sender == 0) {
        int t = socket(AF_INET, SOCK_DGRAM, 0);
        struct timespec gap = {0, 100000};
        char b[16];
        for (int i = 0; i < 3000; i++) {
            int n = snprintf(b, sizeof b, "%06d", i);
            sendto(t, b, n, 0, (void *)&a, sizeof a);
            nanosleep(&gap, 0);
        }
        _exit(0);
    }
    struct sigaction sa = {0};
    sa.sa_handler = reap;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGCHLD, &sa, 0);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, 0);
    struct timeval tv = {1, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct itimerval it = {{0, 1000}, {0, 1000}};
    setitimer(ITIMER_REAL, &it, 0);
    long got = 0;
    char b[64];
    struct timespec last, t;
    clock_gettime(CLOCK_MONOTONIC, &last);
    for (;;) {
        ssize_t n = recv(s, b, sizeof b, 0);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (n >= 0) { got++; last = t; continue; }
        /* A second with nothing (the timer's EINTRs restart the receive's
         * timeout): the sender is done. */
        if (t.tv_sec - last.tv_sec + (t.tv_nsec - last.tv_nsec) / 1e9 > 1.0) break;
    }
    struct itimerval z = {0};
    setitimer(ITIMER_REAL, &z, 0);
    printf("got %ld forks>0 %d\n", got, forks > 0);
    return 0;
}
