/* ppoll_mask.c HOST PORT ppoll|pselect|epoll_pwait: SIGALRM unblocked, a
 * fast interval timer; the call with an empty sigmask on a connection with
 * no data, 20000 times. After each call the thread's mask must be what it
 * was (empty): the kernel's ppoll restores it. Prints the round at which
 * SIGALRM was found left blocked, if any; the counts vary, so a test
 * compares only the first words. Review sig38 #3 (ppollmask.c). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
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
static volatile long ran;
static void h(int s) { (void)s; ran++; }
int main(int argc, char **argv) {
    const char *host = argv[1]; int port = atoi(argv[2]); const char *w = argc > 3 ? argv[3] : "ppoll";
    struct sigaction act = {0}; act.sa_handler = h; sigaction(SIGALRM, &act, 0);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1; setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, 4);
    struct sockaddr_in a = {0}; a.sin_family = AF_INET; a.sin_port = htons(port); inet_pton(AF_INET, host, &a.sin_addr);
    if (bind(l, (void *)&a, sizeof a)) { perror("bind"); return 2; } listen(l, 4);
    int c = socket(AF_INET, SOCK_STREAM, 0); if (connect(c, (void *)&a, sizeof a)) { perror("connect"); return 2; }
    int s = accept(l, 0, 0);
    int ep = epoll_create1(0); struct epoll_event ev = {EPOLLIN, {0}}; epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
    sigset_t empty; sigemptyset(&empty);
    struct itimerval it = {{0, 97}, {0, 97}}; setitimer(ITIMER_REAL, &it, 0);
    long eintr = 0;
    for (long i = 0; i < 20000; i++) {
        int r;
        if (!strcmp(w, "ppoll")) { struct pollfd p = {c, POLLIN, 0}; struct timespec t = {0, 30000}; r = ppoll(&p, 1, &t, &empty); }
        else if (!strcmp(w, "pselect")) { fd_set f; FD_ZERO(&f); FD_SET(c, &f); struct timespec t = {0, 30000}; r = pselect(c + 1, &f, 0, 0, &t, &empty); }
        else { r = epoll_pwait(ep, &ev, 1, 0, &empty); }
        if (r < 0 && errno == EINTR) eintr++;
        sigset_t cur; sigprocmask(SIG_BLOCK, 0, &cur);
        if (sigismember(&cur, SIGALRM)) {
            struct itimerval z = {0}; setitimer(ITIMER_REAL, &z, 0);
            printf("%s: SIGALRM LEFT BLOCKED after round %ld (handler ran %ld, EINTR %ld)\n", w, i, ran, eintr);
            return 1;
        }
    }
    struct itimerval z = {0}; setitimer(ITIMER_REAL, &z, 0);
    printf("%s: mask intact after 20000 rounds (handler ran %ld, EINTR %ld)\n", w, ran, eintr);
    (void)s; return 0;
}
