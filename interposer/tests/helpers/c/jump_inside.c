// jump_inside.c HOST PORT ROUNDS: a SA_RESETHAND SIGALRM handler siglongjmps
// out of recv calls that always find bytes waiting (a child writes without
// pause), so its signal lands in the library's work, never in a sleep;
// timers of 1 - 40 us, ROUNDS rounds. The kernel: every recv returns bytes,
// the jumps happen, and a recv after the last one still works. Before
// decision 73's put-off, the library ran the handler where it landed: the
// jump left the thread "inside", every later call EIO, or crashed
// (jmpinside.c, session 38).
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
static void halrm(int s) { (void)s; siglongjmp(jb, 1); }

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    int rounds = atoi(argv[3]);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (void *)&a, sizeof a) || listen(l, 1)) { perror("bind"); return 1; }
    pid_t c = fork();
    if (c == 0) {
        int s = accept(l, 0, 0);
        char b[4096];
        memset(b, 'x', sizeof b);
        while (write(s, b, sizeof b) > 0) {}
        _exit(0);
    }
    close(l);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (void *)&a, sizeof a)) { perror("connect"); return 1; }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = halrm;
    sa.sa_flags = SA_RESETHAND;
    volatile int jumps = 0, failed = 0;
    char b[64];
    for (volatile int k = 0; k < rounds && !failed; k++) {
        sigaction(SIGALRM, &sa, 0);
        if (sigsetjmp(jb, 1) == 0) {
            struct itimerval it = {{0, 0}, {0, 1 + (k % 40)}};
            setitimer(ITIMER_REAL, &it, 0);
            for (int i = 0; i < 1000000; i++) {
                int r = recv(s, b, 1 + (i % 64), 0);
                if (r <= 0) {
                    printf("recv returned %d errno %s after %d jumps\n", r,
                           r < 0 ? strerror(errno) : "-", jumps);
                    failed = 1;
                    break;
                }
            }
            struct itimerval z = {{0, 0}, {0, 0}};
            setitimer(ITIMER_REAL, &z, 0);
        } else {
            jumps++;
        }
    }
    signal(SIGALRM, SIG_IGN);
    int r = recv(s, b, sizeof b, 0);
    printf("jumped: %s; a recv after: %s\n", jumps > 0 ? "yes" : "no",
           r > 0 ? "bytes" : strerror(errno));
    kill(c, SIGKILL);
    waitpid(c, 0, 0);
    return 0;
}
