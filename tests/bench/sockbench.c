/*
 * sockbench: socket benchmarks through the ordinary BSD sockets API, two
 * processes in one invocation (the program forks: the child serves, the
 * parent is the client and measures). Run it plain for kernel TCP and Unix
 * sockets, and under LD_PRELOAD=libshmnet.so for the emulated network.
 *
 * Usage: sockbench MODE [--tcp ADDR | --unix PATH] [--port P] [--size N]
 *                       [--secs S] [--verify]
 *   MODE     rtt       ping-pong of --size byte messages (echo server)
 *            stream    one-way stream of --size byte writes, 64 KiB reads
 *            connrate  connect, 1-byte request, 1-byte reply, close; repeated
 *            floor     raw shared-memory ping-pong (no sockets): --size bytes
 *                      copied into a shared buffer and out each way, one flag
 *                      word per direction; --size 0 flips the flag only
 *   --tcp    IPv4 address to listen on and connect to (default 127.0.0.1)
 *   --unix   path of a Unix stream socket instead of TCP
 *   --port   TCP port (default 0: any free port)
 *   --size   message or write size in bytes (default 64)
 *   --secs   length of the timed part in seconds (default 0.5)
 *   --verify stream: the server checks every byte received (slower)
 *   --serve  run only the server (rtt, stream, connrate; --port P given):
 *            prints {"ready":PORT} once listening, serves one run, exits
 *   --client run only the client, against a server started with --serve
 *            (another namespace, another environment: scripts/bench-gateway.py)
 * Prints one JSON object on stdout; errors go to stderr as "sockbench: ..."
 * with exit status 1. Both processes give up after --secs + 30 s (SIGALRM).
 *
 * Build: cc -O2 -o sockbench tests/bench/sockbench.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "benchnet.h"

enum mode { RTT, STREAM, CONNRATE, FLOOR };

static enum mode mode;
static size_t size = 64;
static double secs = 0.5;
static int verify;
static int serve_only, client_only;
static const char *who = "client";

#define PERIOD 251 /* stream pattern period: a prime, unaligned to any write size */
#define RBUF (1 << 16)

static const char *mode_name(void)
{
    return mode == RTT ? "rtt" : mode == STREAM ? "stream" : mode == CONNRATE ? "connrate" : "floor";
}

/* Fails with a message and, if with_errno, strerror(errno). */
__attribute__((noreturn)) static void vfail(int with_errno, const char *fmt, va_list ap)
{
    int e = errno;
    fprintf(stderr, "sockbench %s (%s): ", mode_name(), who);
    vfprintf(stderr, fmt, ap);
    if (with_errno)
        fprintf(stderr, ": %s", strerror(e));
    fputc('\n', stderr);
    exit(1);
}

__attribute__((noreturn)) static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(1, fmt, ap);
}

__attribute__((noreturn)) static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(0, fmt, ap);
}

static void usage(void)
{
    fprintf(stderr, "usage: sockbench rtt|stream|connrate|floor [--tcp ADDR | --unix PATH] [--port P] [--size N] [--secs S] [--verify] [--serve | --client]\n");
    exit(2);
}

static int connect_to(int p)
{
    struct sockaddr_storage ss;
    socklen_t len = address(&ss, p);
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    if (connect(fd, (struct sockaddr *)&ss, len) < 0)
        die("connect");
    return fd;
}

static int accept_one(int lfd)
{
    int fd;
    do
        fd = accept(lfd, NULL, NULL);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        die("accept");
    return fd;
}

/* Reads exactly n bytes; returns 0 at EOF before the first byte, 1 when done. */
static int read_full(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            die("read");
        if (r == 0) {
            if (got == 0)
                return 0;
            fail("EOF after %zu of %zu bytes", got, n);
        }
        got += r;
    }
    return 1;
}

static void write_full(int fd, const void *buf, size_t n)
{
    size_t put = 0;
    while (put < n) {
        ssize_t r = write(fd, (const char *)buf + put, n - put);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            die("write");
        if (r == 0)
            fail("write returned 0");
        put += r;
    }
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("malloc");
    memset(p, 0, n);
    return p;
}

/* ---- rtt ---- */

static void rtt_server(int lfd)
{
    int fd = accept_one(lfd);
    nodelay(fd);
    char *buf = xmalloc(size);
    while (read_full(fd, buf, size))
        write_full(fd, buf, size);
    close(fd);
}

static void stamp(char *msg, uint64_t i)
{
    memcpy(msg, &i, size < 8 ? size : 8);
}

static void rtt_client(int p)
{
    int fd = connect_to(p);
    nodelay(fd);
    char *msg = xmalloc(size), *back = xmalloc(size);
    for (size_t k = 0; k < size; k++)
        msg[k] = (char)(k * 31 + 7);
    uint64_t i = 0;
    for (; i < 200; i++) { /* warm-up */
        stamp(msg, i);
        write_full(fd, msg, size);
        if (!read_full(fd, back, size))
            fail("server closed the connection");
        if (memcmp(msg, back, size))
            fail("round trip %llu came back with different bytes", (unsigned long long)i);
    }
    uint64_t n = 0;
    double t0 = now(), t = t0, end = t0 + secs;
    while (t < end) {
        for (int k = 0; k < 32; k++, n++, i++) {
            stamp(msg, i);
            write_full(fd, msg, size);
            if (!read_full(fd, back, size))
                fail("server closed the connection");
            if (memcmp(msg, back, size))
                fail("round trip %llu came back with different bytes", (unsigned long long)i);
        }
        t = now();
    }
    close(fd);
    printf("{\"mode\":\"rtt\",\"size\":%zu,\"iters\":%llu,\"secs\":%.4f,\"rtt_us\":%.4f}\n",
           size, (unsigned long long)n, t - t0, (t - t0) / n * 1e6);
}

/* ---- stream ---- */

static char *pattern(size_t len)
{
    char *p = xmalloc(len + PERIOD);
    for (size_t k = 0; k < len + PERIOD; k++)
        p[k] = (char)((k % PERIOD) * 37 + 11);
    return p;
}

static void stream_server(int lfd)
{
    int fd = accept_one(lfd);
    nodelay(fd);
    char *buf = xmalloc(RBUF), *pat = verify ? pattern(RBUF) : NULL;
    uint64_t got = 0;
    for (;;) {
        ssize_t r = read(fd, buf, RBUF);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            die("read");
        if (r == 0)
            break;
        if (pat && memcmp(buf, pat + got % PERIOD, r)) {
            size_t k = 0;
            while (buf[k] == pat[(got + k) % PERIOD])
                k++;
            fail("wrong byte at stream offset %llu (read of %zd bytes at offset %llu)",
                (unsigned long long)(got + k), r, (unsigned long long)got);
        }
        got += r;
    }
    write_full(fd, &got, sizeof got);
    close(fd);
}

static void stream_client(int p)
{
    int fd = connect_to(p);
    nodelay(fd);
    char *pat = pattern(size);
    uint64_t sent = 0, writes = 0;
    int every = size >= 4096 ? 1 : 256;
    double t0 = now(), end = t0 + secs;
    do {
        for (int k = 0; k < every; k++, writes++) {
            write_full(fd, pat + sent % PERIOD, size);
            sent += size;
        }
    } while (now() < end);
    if (shutdown(fd, SHUT_WR) < 0)
        die("shutdown(SHUT_WR)");
    uint64_t got;
    if (!read_full(fd, &got, sizeof got))
        fail("server closed without reporting its byte count");
    double t = now() - t0;
    close(fd);
    if (got != sent)
        fail("sent %llu bytes, server received %llu", (unsigned long long)sent, (unsigned long long)got);
    printf("{\"mode\":\"stream\",\"size\":%zu,\"bytes\":%llu,\"writes\":%llu,\"secs\":%.4f,"
           "\"gbps\":%.4f,\"writes_per_s\":%.1f,\"verified\":%s}\n",
           size, (unsigned long long)sent, (unsigned long long)writes, t, sent / t / 1e9, writes / t,
           verify ? "true" : "false");
}

/* ---- connrate ---- */

static void connrate_server(int lfd)
{
    for (;;) {
        int fd = accept_one(lfd);
        char c;
        if (!read_full(fd, &c, 1))
            fail("client closed before its request");
        write_full(fd, "a", 1);
        close(fd);
        if (c == 'q')
            return;
    }
}

static void one_conn(int p, char c)
{
    int fd = connect_to(p);
    char r;
    write_full(fd, &c, 1);
    if (!read_full(fd, &r, 1) || r != 'a')
        fail("no reply from the server");
    close(fd);
}

static void connrate_client(int p)
{
    uint64_t n = 0;
    double t0 = now(), t = t0, end = t0 + secs;
    while (t < end) {
        one_conn(p, 'c');
        n++;
        t = now();
    }
    one_conn(p, 'q');
    printf("{\"mode\":\"connrate\",\"conns\":%llu,\"secs\":%.4f,\"per_s\":%.1f}\n",
           (unsigned long long)n, t - t0, n / (t - t0));
}

/* ---- floor: raw shared memory, no sockets ---- */

struct shared {
    _Alignas(64) _Atomic uint64_t req;  /* client -> server: sequence number */
    _Alignas(64) _Atomic uint64_t resp; /* server -> client */
    _Alignas(64) char data[];           /* request buffer, then response buffer */
};

static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static struct shared *floor_map(void)
{
    size_t span = (size + 63) / 64 * 64;
    struct shared *sh = mmap(NULL, sizeof *sh + 2 * span, PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        die("mmap");
    return sh;
}

static void floor_server(struct shared *sh)
{
    size_t span = (size + 63) / 64 * 64;
    char *buf = xmalloc(size);
    for (uint64_t i = 1;; i++) {
        uint64_t v;
        while ((v = atomic_load_explicit(&sh->req, memory_order_acquire)) != i && v != UINT64_MAX)
            relax();
        if (v == UINT64_MAX)
            return;
        memcpy(buf, sh->data, size);
        memcpy(sh->data + span, buf, size);
        atomic_store_explicit(&sh->resp, i, memory_order_release);
    }
}

static void floor_client(struct shared *sh)
{
    size_t span = (size + 63) / 64 * 64;
    char *msg = xmalloc(size), *back = xmalloc(size);
    for (size_t k = 0; k < size; k++)
        msg[k] = (char)(k * 31 + 7);
    uint64_t i = 1, n = 0;
    double t0 = 0, t = 0, end = 0;
    for (;;) {
        if (i == 1001) { /* after 1000 warm-up round trips */
            t0 = t = now();
            end = t0 + secs;
        }
        stamp(msg, i);
        memcpy(sh->data, msg, size);
        atomic_store_explicit(&sh->req, i, memory_order_release);
        while (atomic_load_explicit(&sh->resp, memory_order_acquire) != i)
            relax();
        memcpy(back, sh->data + span, size);
        if (memcmp(msg, back, size))
            fail("floor round trip %llu came back different", (unsigned long long)i);
        i++;
        if (t0 != 0 && (++n & 1023) == 0 && (t = now()) >= end)
            break;
    }
    atomic_store_explicit(&sh->req, UINT64_MAX, memory_order_release);
    printf("{\"mode\":\"floor\",\"size\":%zu,\"iters\":%llu,\"secs\":%.4f,\"rtt_us\":%.4f}\n",
           size, (unsigned long long)n, t - t0, (t - t0) / n * 1e6);
}

/* ---- driver ---- */

static void serve(int lfd)
{
    if (mode == RTT)
        rtt_server(lfd);
    else if (mode == STREAM)
        stream_server(lfd);
    else
        connrate_server(lfd);
    close(lfd);
    if (unix_path)
        unlink(unix_path);
}

static void run_client(int p)
{
    if (mode == RTT)
        rtt_client(p);
    else if (mode == STREAM)
        stream_client(p);
    else
        connrate_client(p);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    if (!strcmp(argv[1], "rtt"))
        mode = RTT;
    else if (!strcmp(argv[1], "stream"))
        mode = STREAM;
    else if (!strcmp(argv[1], "connrate"))
        mode = CONNRATE;
    else if (!strcmp(argv[1], "floor"))
        mode = FLOOR;
    else
        usage();
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--verify")) {
            verify = 1;
            continue;
        }
        if (!strcmp(a, "--serve") || !strcmp(a, "--client")) {
            *(a[2] == 's' ? &serve_only : &client_only) = 1;
            continue;
        }
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        char *endp;
        if (!strcmp(a, "--tcp"))
            tcp_addr = v;
        else if (!strcmp(a, "--unix"))
            unix_path = v;
        else if (!strcmp(a, "--port"))
            port = (int)strtol(v, &endp, 10);
        else if (!strcmp(a, "--size"))
            size = strtoull(v, &endp, 10);
        else if (!strcmp(a, "--secs"))
            secs = strtod(v, &endp);
        else
            usage();
    }
    if (mode != FLOOR && size == 0)
        usage();
    if ((serve_only || client_only) && (mode == FLOOR || port == 0 || serve_only == client_only))
        usage();
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (serve_only) {
        who = "server";
        alarm((unsigned)secs + 60);
        int p, lfd = listener(1024, &p);
        printf("{\"ready\":%d}\n", p);
        serve(lfd);
        return 0;
    }
    if (client_only) {
        alarm((unsigned)secs + 60);
        run_client(port);
        return 0;
    }

    struct shared *sh = mode == FLOOR ? floor_map() : NULL;
    int pfd[2];
    if (pipe(pfd) < 0)
        die("pipe");
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        who = "server";
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed client */
        alarm((unsigned)secs + 30);
        close(pfd[0]);
        if (mode == FLOOR) {
            floor_server(sh);
            _exit(0);
        }
        int p, lfd = listener(1024, &p);
        write_full(pfd[1], &p, sizeof p); /* ready: tell the client the port */
        close(pfd[1]);
        serve(lfd);
        _exit(0);
    }
    alarm((unsigned)secs + 30);
    close(pfd[1]);
    int p = 0;
    if (mode == FLOOR)
        floor_client(sh);
    else {
        if (!read_full(pfd[0], &p, sizeof p))
            fail("the server failed before listening");
        run_client(p);
    }
    int st;
    if (waitpid(pid, &st, 0) < 0)
        die("waitpid");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        if (WIFSIGNALED(st))
            fail("server died of signal %d", WTERMSIG(st));
        fail("server exited with status %d", WEXITSTATUS(st));
    }
    return 0;
}
