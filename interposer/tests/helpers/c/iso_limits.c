/* Lowered resource limits around connect, for interposer/tests/isolation.rs.
 * Talks to an echo server at HOST PORT (IPv4). Every exchange sends 65536
 * pseudo-random bytes and compares the echo byte for byte.
 *
 *   iso_limits fsize HOST PORT
 *     RLIMIT_FSIZE 4096, then connect and exchange: prints `ok` or
 *     `error ERRNO` (connect) / `bad STEP` (exchange), exit 0 either way —
 *     a SIGXFSZ kills it instead.
 *   iso_limits nofile HOST PORT
 *     Re-executes itself with RLIMIT_NOFILE 4096 (so the process starts
 *     with it); connects once and exchanges; lowers RLIMIT_NOFILE to 64;
 *     exchanges on the first connection again; 10 times connect, exchange,
 *     close; the first connection once more. Prints `ok 11` or the step
 *     that failed.
 *   iso_limits nofile_raw HOST PORT
 *     The same, lowering the limit with a raw prlimit64 system call, which
 *     the library's setrlimit/prlimit hooks do not see.
 *   iso_limits emfile HOST PORT
 *     RLIMIT_NOFILE 128; connects once and exchanges (the process has
 *     connected before, as a busy one has); makes a socket, then opens
 *     /dev/null until EMFILE (no descriptor left) and connects the socket:
 *     prints `connect ERRNO` (or `connect ok`); closes the last 16
 *     /dev/null descriptors, exchanges on the first connection again,
 *     connects a new socket and exchanges: `after ok` or what failed. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static struct sockaddr_in target;
static uint64_t seed = 0x9e3779b97f4a7c15ull;

static const char *ename(int e) {
    const char *n = strerrorname_np(e);
    return n ? n : "E?";
}

static int set_limit(int res, rlim_t soft) {
    struct rlimit r;
    if (getrlimit(res, &r) != 0) return -1;
    r.rlim_cur = soft;
    if (r.rlim_max != RLIM_INFINITY && r.rlim_max < soft) r.rlim_max = soft;
    return setrlimit(res, &r);
}

/* Connect a new socket: its fd, or -errno. */
static int dial(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) return -errno;
    if (connect(s, (struct sockaddr *)&target, sizeof target) != 0) {
        int e = errno;
        close(s);
        return -e;
    }
    return s;
}

/* 65536 bytes out, the same back: 0 when equal. */
static int exchange(int s) {
    static unsigned char out[65536], in[65536];
    for (size_t i = 0; i < sizeof out; i++) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out[i] = (unsigned char)seed;
    }
    struct timeval tv = {.tv_sec = 10};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    size_t sent = 0, got = 0;
    while (sent < sizeof out) {
        ssize_t k = send(s, out + sent, sizeof out - sent, MSG_NOSIGNAL);
        if (k <= 0) return -1;
        sent += (size_t)k;
    }
    while (got < sizeof in) {
        ssize_t k = recv(s, in + got, sizeof in - got, 0);
        if (k <= 0) return -1;
        got += (size_t)k;
    }
    return memcmp(in, out, sizeof in) == 0 ? 0 : -1;
}

static int fsize(void) {
    if (set_limit(RLIMIT_FSIZE, 4096) != 0) return perror("setrlimit"), 2;
    int s = dial();
    if (s < 0) return printf("error %s\n", ename(-s)), 0;
    if (exchange(s) != 0) return printf("bad exchange\n"), 0;
    close(s);
    printf("ok\n");
    return 0;
}

/* RLIMIT_NOFILE's soft limit set past libc (and any hook of it). */
static int set_nofile_raw(rlim_t soft) {
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) != 0) return -1;
    r.rlim_cur = soft;
    return (int)syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, &r, NULL);
}

static int nofile(int argc, char **argv) {
    if (argc < 5) {
        if (set_limit(RLIMIT_NOFILE, 4096) != 0) return perror("setrlimit"), 2;
        char *args[] = {argv[0], argv[1], argv[2], argv[3], "started", NULL};
        execv("/proc/self/exe", args);
        return perror("execv"), 2;
    }
    int first = dial();
    if (first < 0) return printf("first connect %s\n", ename(-first)), 0;
    if (exchange(first) != 0) return printf("bad first exchange\n"), 0;
    int lowered = strcmp(argv[1], "nofile_raw") == 0 ? set_nofile_raw(64)
                                                     : set_limit(RLIMIT_NOFILE, 64);
    if (lowered != 0) return perror("setrlimit 64"), 2;
    if (exchange(first) != 0) return printf("bad first exchange after lowering\n"), 0;
    for (int i = 0; i < 10; i++) {
        int s = dial();
        if (s < 0) return printf("connect %d %s\n", i + 2, ename(-s)), 0;
        if (exchange(s) != 0) return printf("bad exchange %d\n", i + 2), 0;
        close(s);
    }
    if (exchange(first) != 0) return printf("bad first exchange at the end\n"), 0;
    close(first);
    printf("ok 11\n");
    return 0;
}

static int emfile(void) {
    if (set_limit(RLIMIT_NOFILE, 128) != 0) return perror("setrlimit"), 2;
    int first = dial();
    if (first < 0) return printf("first connect %s\n", ename(-first)), 0;
    if (exchange(first) != 0) return printf("bad first exchange\n"), 0;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) return perror("socket"), 2;
    int fds[256], n = 0;
    for (;;) {
        int f = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (f < 0) break;
        if (n == 256) return fprintf(stderr, "more than 256 fds\n"), 2;
        fds[n++] = f;
    }
    if (errno != EMFILE) return perror("open /dev/null"), 2;
    if (connect(s, (struct sockaddr *)&target, sizeof target) == 0) {
        printf("connect ok\n");
    } else {
        printf("connect %s\n", ename(errno));
    }
    fflush(stdout);
    for (int i = 0; i < 16 && n > 0; i++) close(fds[--n]);
    if (exchange(first) != 0) return printf("after bad first exchange\n"), 0;
    int t = dial();
    if (t < 0) return printf("after %s\n", ename(-t)), 0;
    if (exchange(t) != 0) return printf("after bad exchange\n"), 0;
    printf("after ok\n");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 4) return fprintf(stderr, "usage: iso_limits MODE HOST PORT\n"), 2;
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &target.sin_addr) != 1) return 2;
    if (strcmp(argv[1], "fsize") == 0) return fsize();
    if (strcmp(argv[1], "nofile") == 0 || strcmp(argv[1], "nofile_raw") == 0)
        return nofile(argc, argv);
    if (strcmp(argv[1], "emfile") == 0) return emfile();
    return 2;
}
