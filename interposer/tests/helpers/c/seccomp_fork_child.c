/* A forked child sandboxes itself with the raw seccomp() system call (as
 * libseccomp's seccomp_load does; the library's prctl hook does not see
 * it), with a filter that kills the process on the calls of file work
 * (open, openat, renameat2, unlinkat, mkdirat, ftruncate, fallocate), then
 * uses the connection it inherited: its first data call must make none of
 * them (review of issue 15, #1: the status claim opened /proc/self/stat or
 * made a status file there, and the child died of SIGSYS).
 *
 * argv: HOST PORT MODE GO. MODE: "exit" (the parent exits at once, as a
 * daemon's does), "stay" (the parent waits for the child and prints its
 * end), "poll" (as stay, and the child adds the connection to an epoll set
 * first),
 * "wait" (as poll, without the filter nor the child's write: review #6, a
 * child that only waits on a connection it was handed is listed). A
 * server process accepts and reads 200 bytes (100 from the parent, 100
 * from the child); the child prints "child ok PID" after its write and
 * exits once the file GO exists (the test looks at the status files
 * meanwhile). The child does not read nor wait under the filter: a wait
 * looks at /proc/loadavg (the spin heuristics, before status files
 * existed). */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* One line in one write (the processes share stdout). */
static void say(const char *fmt, int v) {
    char line[64];
    int n = snprintf(line, sizeof line, fmt, v);
    if (write(1, line, n) != n) exit(4);
}

static int read_n(int fd, char *b, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, b + got, n - got);
        if (r <= 0) return -1;
        got += r;
    }
    return 0;
}

#define DENY(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
                 BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS)

static void sandbox(void) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#ifdef __NR_open
        DENY(__NR_open),
#endif
        DENY(__NR_openat),
        DENY(__NR_renameat2),
        DENY(__NR_unlinkat),
        DENY(__NR_mkdirat),
        DENY(__NR_ftruncate),
        DENY(__NR_fallocate),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
        syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) {
        perror("seccomp");
        exit(3);
    }
}

int main(int argc, char **argv) {
    if (argc != 5) return 2;
    const char *mode = argv[3], *go = argv[4];
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &sa.sin_addr);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(l, (void *)&sa, sizeof sa) || listen(l, 4)) { perror("listen"); return 1; }
    pid_t server = fork();
    if (server == 0) {
        char b[200];
        size_t want = strcmp(mode, "wait") ? 200 : 100;
        int a = accept(l, NULL, NULL);
        if (a < 0 || read_n(a, b, want)) { perror("server"); return 1; }
        say("server got %d\n", 200);
        while (read(a, b, sizeof b) > 0) {}
        return 0;
    }
    close(l);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (void *)&sa, sizeof sa)) { perror("connect"); return 1; }
    char p[100];
    memset(p, 'p', sizeof p);
    if (write(c, p, sizeof p) != sizeof p) { perror("write"); return 1; }
    pid_t child = fork();
    if (child == 0) {
        if (!strcmp(mode, "exit")) usleep(300000); /* the parent is gone */
        int wait_only = !strcmp(mode, "wait"), ep = epoll_create1(0);
        if (!wait_only) sandbox();
        if (!strcmp(mode, "poll")) { /* epoll_ctl claims (no wait: see above) */
            struct epoll_event ev = {.events = EPOLLIN};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev)) {
                perror("epoll");
                return 1;
            }
        }
        if (wait_only) {
            struct pollfd pf = {.fd = c, .events = POLLIN | POLLOUT};
            if (poll(&pf, 1, 5000) != 1) { perror("poll"); return 1; }
        }
        char q[100];
        memset(q, 'q', sizeof q);
        if (!wait_only && write(c, q, sizeof q) != sizeof q) { perror("child"); return 1; }
        say("child ok %d\n", (int)getpid());
        for (int i = 0; i < 3000; i++) { /* up to 30 s */
            struct stat st;
            if (stat(go, &st) == 0) break;
            usleep(10000);
        }
        return 0;
    }
    if (!strcmp(mode, "exit")) return 0;
    close(c);
    int st;
    waitpid(child, &st, 0);
    if (WIFSIGNALED(st))
        say("child killed by signal %d\n", WTERMSIG(st));
    else
        say("child exit %d\n", WEXITSTATUS(st));
    waitpid(server, &st, 0);
    return 0;
}
