/* `seccomp_nonblock MODE HOST PORT`: a blocking connection made, then a
 * seccomp filter installed through prctl (setsockopt -> EPERM: the library
 * takes the process for sandboxed), then the connection made non-blocking
 * under it (MODE fcntl: F_SETFL O_NONBLOCK; fionbio: ioctl FIONBIO) and
 * filled (the peer never reads) until send says EAGAIN; then blocking and
 * non-blocking again, and filled again. Kernel TCP: EAGAIN both times.
 * The library took the mode set under the filter for blocking (it cannot
 * ask for it there) and its send waited for ever (review of conn14,
 * sbfill.c): the alarm ends such a run with TIMEOUT. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static int fionbio;

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "TIMEOUT: send blocked\n";
    (void)!write(1, msg, sizeof msg - 1);
    _exit(3);
}

static void set_mode(int s, int nb) {
    if (fionbio) {
        if (ioctl(s, FIONBIO, &nb)) perror("FIONBIO");
        return;
    }
    int fl = fcntl(s, F_GETFL);
    if (fcntl(s, F_SETFL, nb ? fl | O_NONBLOCK : fl & ~O_NONBLOCK)) perror("F_SETFL");
}

// Sends until the first failure: its errno's name.
static const char *fill(int s) {
    static char buf[65536];
    for (;;) {
        if (send(s, buf, sizeof buf, MSG_NOSIGNAL) < 0) return strerrorname_np(errno);
    }
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    fionbio = !strcmp(argv[1], "fionbio");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
    inet_pton(AF_INET, argv[2], &sa.sin_addr);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&sa, sizeof sa) || listen(l, 8)) { perror("bind"); return 1; }
    pid_t peer = fork();
    if (peer == 0) {
        int c = accept(l, NULL, NULL);
        (void)c;
        alarm(30);
        pause(); // never reads
        _exit(0);
    }
    close(l);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&sa, sizeof sa)) { perror("connect"); return 1; }
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_setsockopt, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_fprog prog = {4, f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
        perror("seccomp");
        return 1;
    }
    signal(SIGALRM, on_alarm);
    alarm(20);
    setvbuf(stdout, NULL, _IONBF, 0);
    set_mode(s, 1);
    printf("%s: non-blocking %d, filled: %s", argv[1], !!(fcntl(s, F_GETFL) & O_NONBLOCK), fill(s));
    set_mode(s, 0);
    set_mode(s, 1);
    printf("; again %s\n", fill(s));
    kill(peer, SIGKILL);
    return 0;
}
