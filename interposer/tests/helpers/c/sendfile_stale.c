// sendfile from a number whose fstat note went stale past the library's
// hooks (review s31): each must be the kernel's EINVAL, taking no data.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *ADDR;
static int cli, srv;

static void connect_pair(void) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1; setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(47123)};
    inet_pton(AF_INET, ADDR, &a.sin_addr);
    if (bind(l, (void *)&a, sizeof a) || listen(l, 4)) { perror("bind/listen"); exit(1); }
    cli = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(cli, (void *)&a, sizeof a)) { perror("connect"); exit(1); }
    srv = accept(l, 0, 0);
    close(l);
}

static int regular_at(void) {
    char p[] = "/tmp/stale-XXXXXX";
    int fd = mkstemp(p); unlink(p);
    if (write(fd, "0123456789abcdefghij", 20) != 20) exit(1);
    lseek(fd, 0, SEEK_SET);
    struct stat st; fstat(fd, &st);   // the note
    return fd;
}

static void report(const char *label, ssize_t r) {
    if (r < 0) printf("%-44s -1 %s\n", label, strerrorname_np(errno));
    else printf("%-44s %zd\n", label, r);
    fflush(stdout);
}

static void drain(void) {
    char b[4096]; int fl = fcntl(srv, F_GETFL); fcntl(srv, F_SETFL, fl | O_NONBLOCK);
    ssize_t n = recv(srv, b, sizeof b, 0);
    if (n > 0) printf("    peer received %zd bytes: %.*s\n", n, (int)n, b);
    fcntl(srv, F_SETFL, fl);
}

// new fd made past the library on number `want`
static void raw_pipe_onto(int want, int *wr) {
    int p[2]; syscall(SYS_pipe2, p, 0);
    if (p[0] != want) { syscall(SYS_dup3, p[0], want, 0); } // (dup3 via syscall is hooked -> don't rely)
    *wr = p[1];
    if (p[0] != want) printf("    (pipe landed on %d, wanted %d)\n", p[0], want);
}

int main(int argc, char **argv) {
    ADDR = argc > 1 ? argv[1] : "127.0.0.1";
    signal(SIGPIPE, SIG_IGN);
    connect_pair();
    const char *which = argc > 2 ? argv[2] : "all";
    off_t off;
    int n, w;

    if (!strcmp(which, "all") || !strcmp(which, "pipe-data")) {
        n = regular_at(); syscall(SYS_close, n);
        raw_pipe_onto(n, &w);
        write(w, "PIPEDATA", 8);
        report("raw close + raw pipe2 (data), offset NULL:", sendfile(cli, n, NULL, 8));
        drain();
        off = 0; report("raw close + raw pipe2, offset ptr:", sendfile(cli, n, &off, 8));
        drain();
        close(n); close(w);
    }
    if (!strcmp(which, "all") || !strcmp(which, "dir")) {
        n = regular_at(); syscall(SYS_close, n);
        int d = syscall(SYS_openat, AT_FDCWD, "/tmp", O_RDONLY | O_DIRECTORY);
        printf("    dir fd %d (note on %d)\n", d, n);
        report("raw close + raw openat dir, offset NULL:", sendfile(cli, d, NULL, 8));
        close(d);
    }
    if (!strcmp(which, "all") || !strcmp(which, "eventfd")) {
        n = regular_at(); syscall(SYS_close, n);
        int e = syscall(SYS_eventfd2, 5, 0);
        printf("    eventfd %d (note on %d)\n", e, n);
        report("raw close + raw eventfd2, count 8:", sendfile(cli, e, NULL, 8));
        uint64_t v = 0; int fl = fcntl(e, F_GETFL); fcntl(e, F_SETFL, fl | O_NONBLOCK);
        ssize_t r = read(e, &v, 8);
        printf("    eventfd counter afterwards: %s%llu\n", r == 8 ? "" : "(empty) ", (unsigned long long)v);
        drain();
        close(e);
    }
    if (!strcmp(which, "all") || !strcmp(which, "socket")) {
        // a kernel socket received by SCM_RIGHTS onto the noted number
        n = regular_at();
        int sp[2]; socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
        int tp[2]; socketpair(AF_UNIX, SOCK_STREAM, 0, tp);
        write(tp[1], "SOCKDATA", 8);
        syscall(SYS_close, n);
        char c = 'x'; struct iovec io = {&c, 1};
        union { char b[CMSG_SPACE(sizeof(int))]; struct cmsghdr a; } u;
        struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof u.b};
        struct cmsghdr *h = CMSG_FIRSTHDR(&m);
        h->cmsg_level = SOL_SOCKET; h->cmsg_type = SCM_RIGHTS; h->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(h), &tp[0], sizeof(int));
        sendmsg(sp[0], &m, 0); close(tp[0]);
        struct msghdr r = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof u.b};
        recvmsg(sp[1], &r, 0);
        int got; memcpy(&got, CMSG_DATA(CMSG_FIRSTHDR(&r)), sizeof got);
        printf("    received socket on %d (note on %d)\n", got, n);
        report("raw close + SCM_RIGHTS unix socket, NULL:", sendfile(cli, got, NULL, 8));
        drain();
        close(got);
    }
    if (!strcmp(which, "all") || !strcmp(which, "pipe-empty")) {
        n = regular_at(); syscall(SYS_close, n);
        raw_pipe_onto(n, &w);
        alarm(3);
        report("raw close + raw pipe2 (empty), offset NULL:", sendfile(cli, n, NULL, 8));
        close(n); close(w);
    }
    return 0;
}
