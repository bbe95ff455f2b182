/* Echo over two connections from inside a seccomp sandbox like OpenSSH's
 * pre-authentication child (openssh-portable sandbox-seccomp-filter.c):
 * RLIMIT_NOFILE 1, PR_SET_NO_NEW_PRIVS, then a filter that allows only
 * read, write, poll, select, pselect6, futex, clock and sleep calls,
 * getpid and friends, memory management (mmap/mprotect without PROT_EXEC),
 * close, shutdown, rt_sigprocmask, rt_sigreturn and exit; open, openat,
 * stat, fstat, newfstatat and shmget fail with EACCES; anything else kills
 * the process (SECCOMP_RET_KILL_PROCESS).
 *
 *   seccomp_echo server ADDR SANDBOX FORK MIB
 *       listens on ADDR port 0 (prints "port N"), accepts two connections,
 *       makes the second non-blocking, forks a child for them if FORK (the
 *       connections are then shared with the parent, as in sshd), installs
 *       the filter if SANDBOX, and echoes: connection 1 with blocking
 *       read/write, connection 2 with poll and non-blocking read/write
 *       until end of stream, then shuts it down.
 *   seccomp_echo client ADDR PORT SANDBOX MIB
 *       connects twice, installs the filter if SANDBOX; over connection 1
 *       writes MIB/2 MiB in random-sized chunks and reads each echo back
 *       (blocking), over connection 2 streams MIB MiB both ways at once
 *       with poll, then SHUT_WR and reads to end of stream.
 *
 *   seccomp_echo strict ADDR PORT
 *       connects twice, enters SECCOMP_MODE_STRICT (read, write, exit and
 *       sigreturn only); a read and a write on connection 1 must fail
 *       (EACCES) rather than kill; prints "strict ok" and exits with
 *       exit(2) (exit_group is not allowed).
 *
 * Both print sha256 of what they sent and received on each connection:
 *   "client 1 sent=HEX recv=HEX", "server 1 recv=HEX sent=HEX", ...
 * and "done" at the end. Output uses write(2) only (stdio would fstat). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 1)
        n = sizeof line - 1;
    for (int off = 0; off < n;) {
        ssize_t k = write(1, line + off, (size_t)(n - off));
        if (k <= 0)
            break;
        off += (int)k;
    }
}

#define die(...)                                                                         \
    do {                                                                                 \
        int e_ = errno;                                                                  \
        out("FAIL %s:%d: ", __FILE__, __LINE__);                                         \
        out(__VA_ARGS__);                                                                \
        out(" (errno %d %s)\n", e_, strerrorname_np(e_) ? strerrorname_np(e_) : "?");    \
        _exit(1);                                                                        \
    } while (0)
#define check(c, ...)                                                                    \
    do {                                                                                 \
        if (!(c))                                                                        \
            die(__VA_ARGS__);                                                            \
    } while (0)

/* ---- sha256 (FIPS 180-4) ---- */
struct sha {
    uint32_t h[8];
    uint8_t buf[64];
    uint64_t len;
};
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
static void sha_block(struct sha *s, const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d;
    s->h[4] += e, s->h[5] += f, s->h[6] += g, s->h[7] += h;
}
static void sha_init(struct sha *s) {
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof iv);
    s->len = 0;
}
static void sha_add(struct sha *s, const void *data, size_t n) {
    const uint8_t *p = data;
    while (n) {
        size_t used = s->len % 64, k = 64 - used < n ? 64 - used : n;
        memcpy(s->buf + used, p, k);
        s->len += k, p += k, n -= k;
        if (s->len % 64 == 0)
            sha_block(s, s->buf);
    }
}
static void sha_hex(struct sha *s, char hex[65]) {
    uint64_t bits = s->len * 8;
    uint8_t pad = 0x80, zero = 0, lenb[8];
    sha_add(s, &pad, 1);
    while (s->len % 64 != 56)
        sha_add(s, &zero, 1);
    for (int i = 0; i < 8; i++)
        lenb[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha_add(s, lenb, 8);
    for (int i = 0; i < 8; i++)
        snprintf(hex + 8 * i, 9, "%08x", s->h[i]);
}

/* ---- the sandbox ---- */
#define ALLOW(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)
#define DENY(nr, err)                                                                    \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (err))
/* Allowed only if the prot argument (args[2], low word) has no bit outside
 * PROT_READ|PROT_WRITE (PROT_NONE is 0), as OpenSSH's SC_ALLOW_ARG_MASK. */
#define ALLOW_PROT(nr)                                                                   \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 4),                                     \
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2])),      \
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, ~(uint32_t)(PROT_READ | PROT_WRITE), 1, 0), \
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW), BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS)

static void sandbox(void) {
    /* OpenSSH sets 1, not 0: poll(2) fails with EINVAL for more fds than
     * RLIMIT_NOFILE. Either way no new fd can be made. */
    struct rlimit one = {1, 1};
    check(setrlimit(RLIMIT_NOFILE, &one) == 0, "setrlimit(RLIMIT_NOFILE, 1)");
    check(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "PR_SET_NO_NEW_PRIVS");
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        DENY(__NR_open, EACCES),
        DENY(__NR_openat, EACCES),
        DENY(__NR_stat, EACCES),
        DENY(__NR_fstat, EACCES),
        DENY(__NR_newfstatat, EACCES),
        DENY(__NR_shmget, EACCES),
        ALLOW(__NR_read),
        ALLOW(__NR_write),
        ALLOW(__NR_poll),
        ALLOW(__NR_select),
        ALLOW(__NR_pselect6),
        ALLOW(__NR_futex),
        ALLOW(__NR_clock_gettime),
        ALLOW(__NR_gettimeofday),
        ALLOW(__NR_time),
        ALLOW(__NR_nanosleep),
        ALLOW(__NR_clock_nanosleep),
        ALLOW(__NR_getpid),
        ALLOW(__NR_getuid),
        ALLOW(__NR_geteuid),
        ALLOW(__NR_getpgid),
        ALLOW(__NR_getrandom),
        ALLOW(__NR_brk),
        ALLOW(__NR_mremap),
        ALLOW(__NR_munmap),
        ALLOW(__NR_madvise),
        ALLOW(__NR_close),
        ALLOW(__NR_shutdown),
        ALLOW(__NR_rt_sigprocmask),
        ALLOW(__NR_rt_sigreturn),
        ALLOW(__NR_exit),
        ALLOW(__NR_exit_group),
        ALLOW_PROT(__NR_mmap),
        ALLOW_PROT(__NR_mprotect),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    /* SECCOMP_VIA=syscall: seccomp(2) through libc's syscall(), as
     * libseccomp's seccomp_load makes it. */
    const char *via = getenv("SECCOMP_VIA");
    if (via && strcmp(via, "syscall") == 0)
        check(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0, "seccomp(2)");
    else
        check(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0, "PR_SET_SECCOMP");
    /* The filter is on: a call outside it kills us, a denied one fails. */
    check(open("/dev/null", O_RDONLY) < 0 && errno == EACCES, "open inside the sandbox");
}

/* ---- data ---- */
struct gen {
    uint64_t x;
};
static void gen_fill(struct gen *g, uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        g->x ^= g->x << 13, g->x ^= g->x >> 7, g->x ^= g->x << 17;
        p[i] = (uint8_t)(g->x >> 29);
    }
}

static size_t read_full(int fd, uint8_t *p, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, p + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        check(k >= 0, "read");
        if (k == 0)
            break;
        got += (size_t)k;
    }
    return got;
}

static void write_full(int fd, const uint8_t *p, size_t n) {
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        check(k > 0, "write");
        p += k, n -= (size_t)k;
    }
}

static uint8_t bufa[1 << 16], bufb[1 << 18];

/* Server, connection 1: blocking echo until end of stream. */
static void serve_blocking(int fd) {
    struct sha rx, tx;
    sha_init(&rx), sha_init(&tx);
    for (;;) {
        ssize_t k = read(fd, bufa, sizeof bufa);
        if (k < 0 && errno == EINTR)
            continue;
        check(k >= 0, "server read 1");
        if (k == 0)
            break;
        sha_add(&rx, bufa, (size_t)k);
        write_full(fd, bufa, (size_t)k);
        sha_add(&tx, bufa, (size_t)k);
    }
    check(shutdown(fd, SHUT_WR) == 0, "shutdown 1");
    char a[65], b[65];
    unsigned long long bytes = rx.len;
    sha_hex(&rx, a), sha_hex(&tx, b);
    out("server 1 recv=%s sent=%s bytes=%llu\n", a, b, bytes);
}

/* Server, connection 2 (non-blocking): echo with poll until end of stream. */
static void serve_polling(int fd) {
    struct sha rx, tx;
    sha_init(&rx), sha_init(&tx);
    size_t head = 0, tail = 0; /* bufb[tail..head) waits to go back */
    int eof = 0, waits = 0;
    while (!eof || head > tail) {
        struct pollfd p = {fd, 0, 0};
        if (!eof && head < sizeof bufb)
            p.events |= POLLIN;
        if (head > tail)
            p.events |= POLLOUT;
        int n = poll(&p, 1, 10000);
        if (n < 0 && errno == EINTR)
            continue;
        check(n == 1, "server poll (%d) events %x", n, p.events);
        waits++;
        if (p.revents & (POLLIN | POLLHUP | POLLERR) && !eof && head < sizeof bufb) {
            ssize_t k = read(fd, bufb + head, sizeof bufb - head);
            if (k == 0)
                eof = 1;
            else if (k > 0) {
                sha_add(&rx, bufb + head, (size_t)k);
                head += (size_t)k;
            } else
                check(errno == EAGAIN || errno == EINTR, "server read 2");
        }
        if (head > tail) {
            ssize_t k = write(fd, bufb + tail, head - tail);
            if (k > 0) {
                sha_add(&tx, bufb + tail, (size_t)k);
                tail += (size_t)k;
                if (tail == head)
                    head = tail = 0;
            } else
                check(k < 0 && (errno == EAGAIN || errno == EINTR), "server write 2");
        }
    }
    check(shutdown(fd, SHUT_WR) == 0, "shutdown 2");
    char a[65], b[65];
    unsigned long long bytes = rx.len;
    sha_hex(&rx, a), sha_hex(&tx, b);
    out("server 2 recv=%s sent=%s bytes=%llu polls=%d\n", a, b, bytes, waits);
}

static int listen_on(const char *addr, int *port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    check(s >= 0, "socket");
    struct sockaddr_in sin = {.sin_family = AF_INET};
    check(inet_pton(AF_INET, addr, &sin.sin_addr) == 1, "address %s", addr);
    check(bind(s, (struct sockaddr *)&sin, sizeof sin) == 0, "bind %s", addr);
    check(listen(s, 8) == 0, "listen");
    socklen_t len = sizeof sin;
    check(getsockname(s, (struct sockaddr *)&sin, &len) == 0, "getsockname");
    *port = ntohs(sin.sin_port);
    return s;
}

static void set_nonblocking(int fd) {
    int fl = fcntl(fd, F_GETFL);
    check(fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0, "O_NONBLOCK");
}

static int server(const char *addr, int sandboxed, int forked) {
    int port;
    int l = listen_on(addr, &port);
    out("port %d\n", port);
    int c1 = accept(l, NULL, NULL);
    check(c1 >= 0, "accept 1");
    int c2 = accept(l, NULL, NULL);
    check(c2 >= 0, "accept 2");
    set_nonblocking(c2);
    close(l);
    if (forked) {
        pid_t pid = fork();
        check(pid >= 0, "fork");
        if (pid > 0) {
            close(c1), close(c2);
            int st;
            check(waitpid(pid, &st, 0) == pid, "waitpid");
            if (WIFSIGNALED(st))
                die("sandboxed child killed by signal %d", WTERMSIG(st));
            check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child exit status %d", WEXITSTATUS(st));
            out("done\n");
            return 0;
        }
    }
    if (sandboxed)
        sandbox();
    serve_blocking(c1);
    serve_polling(c2);
    close(c1), close(c2);
    if (!forked)
        out("done\n");
    return 0;
}

static int connect_to(const char *addr, int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    check(s >= 0, "socket");
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    check(inet_pton(AF_INET, addr, &sin.sin_addr) == 1, "address %s", addr);
    check(connect(s, (struct sockaddr *)&sin, sizeof sin) == 0, "connect %s:%d", addr, port);
    return s;
}

static int client(const char *addr, int port, int sandboxed, size_t mib) {
    int c1 = connect_to(addr, port), c2 = connect_to(addr, port);
    set_nonblocking(c2);
    if (sandboxed)
        sandbox();
    char a[65], b[65];

    /* 1: blocking ping-pong of random-sized chunks. */
    struct gen g = {0x9e3779b97f4a7c15ull}, sizes = {12345};
    struct sha tx, rx;
    sha_init(&tx), sha_init(&rx);
    size_t total = mib << 19, sent = 0;
    static uint8_t back[1 << 16];
    while (sent < total) {
        uint8_t r;
        gen_fill(&sizes, &r, 1);
        size_t n = ((size_t)r * 257 + 1) % sizeof bufa + 1;
        if (n > total - sent)
            n = total - sent;
        gen_fill(&g, bufa, n);
        write_full(c1, bufa, n);
        sha_add(&tx, bufa, n);
        size_t got = read_full(c1, back, n);
        check(got == n, "echo 1 short: %zu of %zu", got, n);
        sha_add(&rx, back, n);
        sent += n;
    }
    check(shutdown(c1, SHUT_WR) == 0, "shutdown 1");
    check(read_full(c1, back, 1) == 0, "end of stream 1");
    sha_hex(&tx, a), sha_hex(&rx, b);
    out("client 1 sent=%s recv=%s bytes=%zu\n", a, b, sent);

    /* 2: both ways at once, non-blocking, with poll. */
    struct gen g2 = {0x243f6a8885a308d3ull};
    sha_init(&tx), sha_init(&rx);
    total = mib << 20, sent = 0;
    size_t have = 0, off = 0; /* bufa[off..have) generated, not sent yet */
    size_t recvd = 0;
    int eof = 0, shut = 0, waits = 0;
    while (!eof) {
        if (sent == total && !shut) {
            check(shutdown(c2, SHUT_WR) == 0, "shutdown 2");
            shut = 1;
        }
        struct pollfd p = {c2, POLLIN, 0};
        if (sent < total)
            p.events |= POLLOUT;
        int n = poll(&p, 1, 10000);
        if (n < 0 && errno == EINTR)
            continue;
        check(n == 1, "client poll (%d): sent %zu received %zu", n, sent, recvd);
        waits++;
        if (p.revents & POLLOUT && sent < total) {
            if (off == have) {
                have = sizeof bufa < total - sent ? sizeof bufa : total - sent;
                gen_fill(&g2, bufa, have);
                sha_add(&tx, bufa, have);
                off = 0;
            }
            ssize_t k = write(c2, bufa + off, have - off);
            if (k > 0)
                off += (size_t)k, sent += (size_t)k;
            else
                check(k < 0 && (errno == EAGAIN || errno == EINTR), "client write 2");
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t k = read(c2, bufb, sizeof bufb);
            if (k == 0)
                eof = 1;
            else if (k > 0)
                sha_add(&rx, bufb, (size_t)k), recvd += (size_t)k;
            else
                check(errno == EAGAIN || errno == EINTR, "client read 2");
        }
    }
    check(recvd == total, "echo 2: received %zu of %zu", recvd, total);
    sha_hex(&tx, a), sha_hex(&rx, b);
    out("client 2 sent=%s recv=%s bytes=%zu polls=%d\n", a, b, sent, waits);
    close(c1), close(c2);
    out("done\n");
    return 0;
}

static int strict_client(const char *addr, int port) {
    int c1 = connect_to(addr, port), c2 = connect_to(addr, port);
    (void)c2;
    check(prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) == 0, "PR_SET_SECCOMP strict");
    char b[16] = "x";
    ssize_t w = write(c1, b, 1);
    int we = errno;
    ssize_t r = read(c1, b, sizeof b);
    int re = errno;
    out("strict write=%zd errno=%d read=%zd errno=%d\n", w, we, r, re);
    if (w == -1 && we == EACCES && r == -1 && re == EACCES)
        out("strict ok\n");
    syscall(SYS_exit, 0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "strict"))
        return strict_client(argv[2], atoi(argv[3]));
    if (argc == 6 && !strcmp(argv[1], "server"))
        return server(argv[2], atoi(argv[3]), atoi(argv[4]));
    if (argc == 6 && !strcmp(argv[1], "client"))
        return client(argv[2], atoi(argv[3]), atoi(argv[4]), (size_t)atoi(argv[5]));
    out("usage: seccomp_echo server ADDR SANDBOX FORK MIB | client ADDR PORT SANDBOX MIB\n");
    return 2;
}
