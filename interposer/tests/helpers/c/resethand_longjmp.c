// resethand_longjmp.c HOST PORT [plain]: a SA_RESETHAND SIGALRM handler
// siglongjmps out of a blocking recv on a TCP connection (reply at 100 ms,
// alarm at 20 ms), 5 rounds, the late reply read after each; then, outside
// any socket call, a plain SIGUSR1 handler and raise(SIGUSR1) three times.
// The kernel: 5 jumps, 5 replies, USR1's handler 3 times, USR1 neither
// blocked nor pending after. plain: the SIGALRM handler without
// SA_RESETHAND. Review of decision 48, jmpreset.c.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static sigjmp_buf jb;
static volatile int usr1;
static void halrm(int s) { (void)s; siglongjmp(jb, 1); }
static void husr1(int s) { (void)s; usr1++; }

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (void *)&a, sizeof a) || listen(l, 1)) { perror("bind"); return 1; }
    pid_t c = fork();
    if (c == 0) {
        int s = accept(l, 0, 0);
        char b;
        while (read(s, &b, 1) == 1) { usleep(100000); write(s, &b, 1); }
        _exit(0);
    }
    close(l);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (void *)&a, sizeof a)) { perror("connect"); return 1; }
    struct sigaction sa;
    char b;
    int jumped = 0, replies = 0, plain = argc > 3 && !strcmp(argv[3], "plain");
    for (int k = 0; k < 5; k++) {
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = halrm;
        sa.sa_flags = plain ? 0 : SA_RESETHAND;
        sigaction(SIGALRM, &sa, 0);
        b = 's';
        write(s, &b, 1);
        if (sigsetjmp(jb, 1) == 0) {
            struct itimerval it = {{0, 0}, {0, 20000}};
            setitimer(ITIMER_REAL, &it, 0);
            int r = recv(s, &b, 1, 0);
            printf("recv returned %d errno %s (no jump)\n", r, r < 0 ? strerror(errno) : "-");
        } else {
            jumped++;
            signal(SIGALRM, SIG_IGN);
            if (recv(s, &b, 1, 0) == 1) replies++;
        }
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = husr1;
    sigaction(SIGUSR1, &sa, 0);
    for (int i = 0; i < 3; i++) raise(SIGUSR1);
    sigset_t m, p;
    pthread_sigmask(SIG_BLOCK, NULL, &m);
    sigpending(&p);
    printf("jumped %d, late replies %d; USR1 handler ran %d of 3; USR1 blocked after: %d, pending: %d\n",
           jumped, replies, usr1, sigismember(&m, SIGUSR1), sigismember(&p, SIGUSR1));
    close(s);
    kill(c, SIGTERM);
    waitpid(c, 0, 0);
    return 0;
}
