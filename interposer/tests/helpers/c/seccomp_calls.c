/* Calls a seccomp filter allows must not get a process killed for the
 * library's sake (found by review). argv: MODE HOST PORT, on a connected
 * pair made before the filter:
 *   getsockopt  OpenSSH-like allow-list (kill otherwise) plus getsockopt:
 *               getsockopt(SO_RCVBUF), then a read;
 *   dup         the same plus dup: dup of the connection, then a read;
 *   closedup    the same: close of a second fd for the connection;
 *   allowall    an allow-all filter on a worker thread: the unfiltered
 *               main thread then connects, accepts and binds as before;
 *   denyunused  a denylist of calls the library never makes (setns,
 *               process_vm_readv), on this thread: the same.
 * Prints `survived` (or the main thread's results), exit 0. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ALLOW(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

static void install(struct sock_filter *f, unsigned short n) {
    struct sock_fprog p = {n, f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) { perror("nnp"); exit(1); }
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &p)) { perror("seccomp"); exit(1); }
}

static void allow_list(int extra) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        ALLOW(__NR_read), ALLOW(__NR_write), ALLOW(__NR_poll), ALLOW(__NR_futex),
        ALLOW(__NR_nanosleep), ALLOW(__NR_clock_gettime), ALLOW(__NR_close), ALLOW(__NR_shutdown),
        ALLOW(__NR_rt_sigprocmask), ALLOW(__NR_exit_group), ALLOW(__NR_exit), ALLOW(__NR_munmap),
        ALLOW(__NR_getpid), ALLOW(__NR_brk), ALLOW(__NR_mmap), ALLOW(__NR_rt_sigreturn),
        ALLOW(extra),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    };
    install(f, sizeof f / sizeof f[0]);
}

/* A hardening denylist: EPERM for setns and process_vm_readv, which the
 * library never calls; everything else allowed. */
static void deny_unused(void) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_setns, 1, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_process_vm_readv, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    install(f, sizeof f / sizeof f[0]);
}

static void *allow_all(void *arg) {
    (void)arg;
    struct sock_filter f[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    install(f, 1);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    const char *mode = argv[1];
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
    inet_pton(AF_INET, argv[2], &a.sin_addr);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, 4);
    if (bind(l, (void *)&a, sizeof a) || listen(l, 8)) { perror("bind/listen"); return 1; }
    if (!strcmp(mode, "allowall") || !strcmp(mode, "denyunused")) {
        if (!strcmp(mode, "allowall")) {
            pthread_t t;
            pthread_create(&t, NULL, allow_all, NULL);
            pthread_join(t, NULL);
        } else {
            deny_unused();
        }
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int r = connect(c, (void *)&a, sizeof a);
        printf("connect %s\n", r ? strerror(errno) : "ok");
        int s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        printf("accept %s\n", s < 0 ? strerror(errno) : "ok");
        struct sockaddr_in b = a;
        b.sin_port = htons(ntohs(a.sin_port) + 1);
        int k = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        r = bind(k, (void *)&b, sizeof b);
        printf("bind %s\n", r ? strerror(errno) : "ok");
        return 0;
    }
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(c, (void *)&a, sizeof a)) { perror("connect"); return 1; }
    int s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    if (s < 0) { perror("accept"); return 1; }
    int d = fcntl(s, F_DUPFD_CLOEXEC, 0);
    write(c, "hi", 2);
    char buf[8];
    if (!strcmp(mode, "getsockopt")) {
        allow_list(__NR_getsockopt);
        int v = 0;
        socklen_t vl = sizeof v;
        getsockopt(s, SOL_SOCKET, SO_RCVBUF, &v, &vl);
    } else if (!strcmp(mode, "dup")) {
        allow_list(__NR_dup);
        (void)dup(s);
    } else if (!strcmp(mode, "closedup")) {
        allow_list(__NR_read);
        close(d);
    } else {
        return 2;
    }
    int n = read(s, buf, sizeof buf);
    write(1, n == 2 ? "survived\n" : "read failed\n", n == 2 ? 9 : 12);
    return 0;
}
