/* Under a seccomp filter that kills open(2) only (a denylist the library's
 * own calls pass), traffic on an emulated connection for a while (long
 * enough for the library's periodic looks at /proc) never kills the
 * program: the library opens files with openat only.
 * argv: HOST PORT. Prints "alive" and the round trips at the end. */
#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}
int main(int argc, char **argv) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &sa.sin_addr);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(l, (void *)&sa, sizeof sa) || listen(l, 4)) { perror("listen"); return 1; }
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (void *)&sa, sizeof sa)) { perror("connect"); return 1; }
    int a = accept(l, NULL, NULL);
    if (a < 0) { perror("accept"); return 1; }
#ifndef __NR_open
#define __NR_open __NR_openat /* no open(2) here: kill nothing we use */
    printf("alive after 0 round trips (no open(2) on this architecture)\n");
    return 0;
#endif
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_open, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) { perror("seccomp"); return 1; }
    if (fork() == 0) {
        /* The echo side: a child, so that each read waits for the other. */
        char b[64];
        ssize_t n;
        close(c);
        while ((n = read(a, b, sizeof b)) > 0)
            if (write(a, b, n) != n) return 1;
        return 0;
    }
    close(a);
    long trips = 0;
    double end = now() + 0.5;
    char b[64];
    while (now() < end) {
        if (write(c, "ping", 4) != 4 || read(c, b, sizeof b) != 4) { perror("trip"); return 1; }
        trips++;
    }
    printf("alive after %ld round trips\n", trips);
    return 0;
}
