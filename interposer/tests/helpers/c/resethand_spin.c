// resethand_spin.c HOST PORT N MODE: a blocking recv on a TCP connection
// whose reply comes 100 ms after the request, SIGALRM at 20 ms; the
// handler sends one byte on a second connection and notes the result.
// MODE: plain (sigaction, no flags), resethand (SA_RESETHAND, installed
// again each round), signal (built with _POSIX_C_SOURCE alone, signal()
// is glibc's __sysv_signal: reset on delivery, no SA_RESTART). The kernel:
// EINTR each round, the handler's send returns 1, the action is SIG_DFL
// after a reset. Review of decision 48, sigspin.c.
#define _POSIX_C_SOURCE 200809L
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

static int s2;
static volatile int hr, hran;

static void h(int s) {
    (void)s;
    int e = errno;
    hr = send(s2, "h", 1, MSG_DONTWAIT);
    hran++;
    errno = e;
}

int main(int argc, char **argv) {
    if (argc < 5) return 2;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (void *)&a, sizeof a) || listen(l, 2)) { perror("bind"); return 1; }
    pid_t c = fork();
    if (c == 0) {
        int x = accept(l, 0, 0), y = accept(l, 0, 0);
        char b;
        if (fork() == 0) { close(x); while (read(y, &b, 1) == 1) ; _exit(0); }
        close(y);
        while (read(x, &b, 1) == 1) {
            struct timespec d = {0, 100000000};
            nanosleep(&d, 0);
            write(x, &b, 1);
        }
        _exit(0);
    }
    close(l);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (void *)&a, sizeof a)) { perror("connect"); return 1; }
    s2 = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s2, (void *)&a, sizeof a)) { perror("connect2"); return 1; }
    const char *mode = argv[4];
    int n = atoi(argv[3]), eintr = 0, sendok = 0, ran = 0, dfl = 0;
    for (int i = 0; i < n; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = h;
        if (!strcmp(mode, "resethand")) { sa.sa_flags = SA_RESETHAND; sigaction(SIGALRM, &sa, 0); }
        else if (!strcmp(mode, "signal")) signal(SIGALRM, h);
        else sigaction(SIGALRM, &sa, 0);
        char b = 's';
        write(s, &b, 1);
        hr = -2;
        hran = 0;
        struct itimerval it = {{0, 0}, {0, 20000}};
        setitimer(ITIMER_REAL, &it, 0);
        int r = recv(s, &b, 1, 0);
        if (r < 0 && errno == EINTR) { eintr++; recv(s, &b, 1, 0); }
        ran += hran;
        if (hr == 1) sendok++;
        struct sigaction now;
        sigaction(SIGALRM, 0, &now);
        if (now.sa_handler == SIG_DFL) dfl++;
    }
    printf("%s: EINTR %d of %d, handler ran %d, its send ok %d, SIG_DFL after %d\n", mode, eintr, n, ran, sendok, dfl);
    close(s);
    close(s2);
    waitpid(c, 0, 0);
    return 0;
}
