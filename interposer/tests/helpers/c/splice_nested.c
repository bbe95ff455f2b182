/* splice from an emulated socket called from a signal handler that
 * interrupted a blocking recv: its sleep runs outside the library (it
 * holds no lock), so the handler's splice is served from the ring, as the
 * kernel's (libc's splice would read the doorbell bytes behind the fd as
 * data). argv: HOST PORT. Prints
 * `splice <result> <errno name>` and `recv <result> <errno name>`. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int cb, pipefd[2];
static volatile ssize_t got = -2;
static volatile int got_errno;

static void on_alarm(int s) {
    (void)s;
    got = splice(cb, NULL, pipefd[1], NULL, 64, SPLICE_F_NONBLOCK);
    got_errno = errno;
}

static const char *name(int e) {
    return e == EIO ? "EIO" : e == EINTR ? "EINTR" : e == EAGAIN ? "EAGAIN" : e == 0 ? "0" : strerror(e);
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(l, (void *)&a, sizeof a) || listen(l, 4)) { perror("listen"); return 1; }
    int ca = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(ca, (void *)&a, sizeof a)) { perror("connect"); return 1; }
    int sa = accept(l, NULL, NULL);
    cb = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(cb, (void *)&a, sizeof a)) { perror("connect"); return 1; }
    int sb = accept(l, NULL, NULL);
    if (pipe(pipefd)) return 1;
    write(sb, "hello", 5);
    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_handler = on_alarm; /* no SA_RESTART: recv ends with EINTR */
    sigaction(SIGALRM, &act, NULL);
    alarm(1);
    char buf[16];
    errno = 0;
    ssize_t r = recv(ca, buf, sizeof buf, 0); /* nothing comes: inside the library */
    int e = errno;
    printf("splice %zd %s\n", got, name(got < 0 ? got_errno : 0));
    printf("recv %zd %s\n", r, name(r < 0 ? e : 0));
    (void)sa;
    return 0;
}
