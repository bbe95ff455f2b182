/* Shared by the readiness test programs (interposer/tests/readiness.rs).
 *
 * Every program is run as `PROG CASE HOST PORT`: HOST:PORT is where its
 * first listener goes (each further listener takes the next port). HOST
 * "kernel" means a kernel TCP comparison run (started without the preload):
 * listeners go to 127.0.0.1 with a port the kernel picks.
 *
 * The connection under test is made with a *peer*: a forked child process
 * that holds the other end and obeys commands sent over a Unix socketpair
 * (write N bytes, read and verify N bytes, sleep, close, shutdown, exit).
 * Data in each direction is a deterministic byte stream; the receiver
 * compares every byte and keeps an FNV-1a checksum that is compared with
 * the sender's at the end.
 *
 * Output, one line each on stdout: "result KEY VALUE" (observations the
 * test compares or reports), "checkpoint" (when RD_CHECKPOINT is set: the
 * program waits for a line on stdin while its connections are open, so the
 * test can look at /proc/net/tcp), "FAIL CASE: why" (then exit 1), and
 * "ok CASE ..." at the end. Every program arms a watchdog: nothing runs
 * longer than a few seconds. */
#ifndef RD_H
#define RD_H
#define _GNU_SOURCE
#pragma GCC diagnostic ignored "-Wunused-function"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *g_case = "?";
static const char *g_host;
static int g_port;
static int g_kernel;

/* ------------------------------------------------------------------ */
/* Output. Raw write(2) on fd 1 (never an emulated socket), so that forked
 * children and signal-time messages do not fight over stdio buffers. */

static void say(const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    ssize_t w = syscall(SYS_write, 1, buf, (size_t)n);
    (void)w;
}

#define fail(...)                                                                  \
    do {                                                                           \
        char m_[512];                                                              \
        int e_ = errno;                                                            \
        snprintf(m_, sizeof m_, __VA_ARGS__);                                      \
        say("FAIL %s: %s (last errno %s, line %d)", g_case, m_, e_ ? strerrorname_np(e_) : "0", __LINE__); \
        exit(1);                                                                   \
    } while (0)

#define check(cond, ...)                                                           \
    do {                                                                           \
        if (!(cond)) fail(__VA_ARGS__);                                            \
    } while (0)

static const char *ename(int e) {
    const char *n = e ? strerrorname_np(e) : "0";
    return n ? n : "E?";
}

/* "POLLIN|POLLOUT|..." for a revents mask (poll or epoll bits: same values). */
static const char *events_str(unsigned ev) {
    static char buf[8][128];
    static int slot;
    char *b = buf[slot++ & 7];
    b[0] = 0;
    static const struct { unsigned bit; const char *name; } names[] = {
        {POLLIN, "IN"}, {POLLPRI, "PRI"}, {POLLOUT, "OUT"}, {POLLERR, "ERR"},
        {POLLHUP, "HUP"}, {POLLNVAL, "NVAL"}, {POLLRDHUP, "RDHUP"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (ev & names[i].bit) {
            if (b[0]) strcat(b, "|");
            strcat(b, names[i].name);
        }
    if (!b[0]) strcpy(b, "none");
    return b;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void sleep_ms(int ms) {
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) && errno == EINTR) {
    }
}

/* ------------------------------------------------------------------ */
/* Watchdog: a thread that ends the process (with a FAIL line) after `secs`.
 * Created with every signal blocked, so it never takes the test's signals. */

static pid_t g_peer_pid; /* killed by the watchdog too */

static void *watchdog_main(void *arg) {
    int secs = (int)(intptr_t)arg;
    sleep_ms(secs * 1000);
    say("FAIL %s: watchdog: still running after %d s (hung)", g_case, secs);
    if (g_peer_pid > 0) kill(g_peer_pid, SIGKILL);
    _exit(3);
    return NULL;
}

static void watchdog(int secs) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    if (pthread_create(&t, NULL, watchdog_main, (void *)(intptr_t)secs)) fail("pthread_create");
    pthread_detach(t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* ------------------------------------------------------------------ */
/* Byte streams: byte i of stream `seed` is a function of (seed, i), so the
 * receiver verifies every byte; both ends keep an FNV-1a checksum. */

struct stream {
    uint64_t seed, off, hash;
};

static struct stream stream_new(uint64_t seed) {
    struct stream s = {seed, 0, 0xcbf29ce484222325ULL};
    return s;
}

static uint64_t splitmix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint8_t stream_byte(uint64_t seed, uint64_t i) {
    return (uint8_t)(splitmix(seed * 0x100000001b3ULL ^ (i >> 3)) >> ((i & 7) * 8));
}

static void stream_gen(struct stream *s, void *buf, size_t n) {
    uint8_t *b = buf;
    for (size_t i = 0; i < n; i++) {
        b[i] = stream_byte(s->seed, s->off + i);
        s->hash = (s->hash ^ b[i]) * 0x100000001b3ULL;
    }
    s->off += n;
}

/* Bytes that arrived; -1 (and the offset in *bad) on the first wrong byte. */
static int stream_check(struct stream *s, const void *buf, size_t n, uint64_t *bad) {
    const uint8_t *b = buf;
    for (size_t i = 0; i < n; i++) {
        if (b[i] != stream_byte(s->seed, s->off + i)) {
            *bad = s->off + i;
            return -1;
        }
        s->hash = (s->hash ^ b[i]) * 0x100000001b3ULL;
    }
    s->off += n;
    return 0;
}

/* Parent -> peer data is stream 1, peer -> parent stream 2. */
#define SEED_UP 1
#define SEED_DOWN 2

/* ------------------------------------------------------------------ */
/* Sockets. */

static struct sockaddr_in addr_of(const char *host, int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) fail("bad address %s", host);
    return a;
}

/* A listener at the next test address (kernel run: 127.0.0.1, any port);
 * *where receives its address. */
static int listener(int flags, struct sockaddr_in *where) {
    struct sockaddr_in a = g_kernel ? addr_of("127.0.0.1", 0) : addr_of(g_host, g_port++);
    int l = socket(AF_INET, SOCK_STREAM | flags, 0);
    check(l >= 0, "socket");
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    check(bind(l, (struct sockaddr *)&a, sizeof a) == 0, "bind %s:%d", g_kernel ? "127.0.0.1" : g_host, ntohs(a.sin_port));
    check(listen(l, 512) == 0, "listen");
    socklen_t len = sizeof a;
    check(getsockname(l, (struct sockaddr *)&a, &len) == 0, "getsockname");
    *where = a;
    return l;
}

/* An address where nothing listens (kernel run: a bound, not listening,
 * socket is left open so no one else takes the port). */
static struct sockaddr_in unused_addr(void) {
    if (!g_kernel) return addr_of(g_host, g_port++);
    struct sockaddr_in a = addr_of("127.0.0.1", 0);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    check(s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0, "bind");
    socklen_t len = sizeof a;
    check(getsockname(s, (struct sockaddr *)&a, &len) == 0, "getsockname");
    return a;
}

static int connect_to(const struct sockaddr_in *a, int flags) {
    int c = socket(AF_INET, SOCK_STREAM | flags, 0);
    check(c >= 0, "socket");
    if (connect(c, (const struct sockaddr *)a, sizeof *a)) {
        check((flags & SOCK_NONBLOCK) && errno == EINPROGRESS, "connect");
        struct pollfd p = {.fd = c, .events = POLLOUT};
        check(poll(&p, 1, 5000) == 1 && p.revents == POLLOUT, "non-blocking connect did not complete");
    }
    return c;
}

static void set_nonblock(int fd, int on) {
    int fl = fcntl(fd, F_GETFL);
    check(fl >= 0, "F_GETFL");
    check(fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) == 0, "F_SETFL");
}

/* poll one fd: its revents, 0 on timeout. */
static int poll1(int fd, int events, int timeout_ms) {
    struct pollfd p = {.fd = fd, .events = (short)events};
    int r;
    do r = poll(&p, 1, timeout_ms);
    while (r < 0 && errno == EINTR);
    check(r >= 0, "poll");
    return r ? p.revents : 0;
}

/* Blocking send of n stream bytes (any fd mode: waits in poll on EAGAIN). */
static void send_stream(int fd, struct stream *s, size_t n) {
    static char buf[65536];
    while (n) {
        size_t k = n < sizeof buf ? n : sizeof buf;
        struct stream save = *s;
        stream_gen(s, buf, k);
        size_t done = 0;
        while (done < k) {
            ssize_t w = send(fd, buf + done, k - done, MSG_NOSIGNAL);
            if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
                if (errno == EAGAIN) poll1(fd, POLLOUT, 100);
                continue;
            }
            if (w <= 0) {
                *s = save;
                fail("send after %llu bytes", (unsigned long long)(s->off + done));
            }
            done += (size_t)w;
        }
        n -= k;
    }
}

/* Receive exactly n bytes and verify them; deadline `ms`. 0, or -1 with
 * errno (0: EOF; EBADMSG: wrong bytes; ETIMEDOUT). */
static int recv_stream(int fd, struct stream *s, size_t n, int ms) {
    static char buf[65536];
    double end = now_ms() + ms;
    while (n) {
        size_t k = n < sizeof buf ? n : sizeof buf;
        ssize_t r = recv(fd, buf, k, MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
            int left = (int)(end - now_ms());
            if (left <= 0) {
                errno = ETIMEDOUT;
                return -1;
            }
            poll1(fd, POLLIN, left < 100 ? left : 100);
            continue;
        }
        if (r < 0) return -1;
        if (r == 0) {
            errno = 0;
            return -1;
        }
        uint64_t bad;
        if (stream_check(s, buf, (size_t)r, &bad)) {
            errno = EBADMSG;
            return -1;
        }
        n -= (size_t)r;
    }
    return 0;
}

/* Fill the send side without blocking until EAGAIN; bytes written. */
static size_t fill(int fd, struct stream *s) {
    static char buf[65536];
    size_t total = 0;
    for (;;) {
        struct stream save = *s;
        stream_gen(s, buf, sizeof buf);
        ssize_t w = send(fd, buf, sizeof buf, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0 && errno == EAGAIN) {
            *s = save;
            return total;
        }
        check(w > 0, "send while filling");
        if ((size_t)w < sizeof buf) {
            /* Rewind the stream to what was really sent. */
            *s = save;
            stream_gen(s, buf, (size_t)w);
        }
        total += (size_t)w;
        check(total < (256u << 20), "256 MiB sent and still no EAGAIN");
    }
}

/* ------------------------------------------------------------------ */
/* Checkpoint: the test looks at /proc/net/tcp while connections are open. */

static void checkpoint(void) {
    if (!getenv("RD_CHECKPOINT")) return;
    say("checkpoint");
    char c;
    ssize_t r;
    do r = read(0, &c, 1);
    while ((r == 1 && c != '\n') || (r < 0 && errno == EINTR));
}

/* ------------------------------------------------------------------ */
/* The peer: a forked child holding the other end of the connection. */

struct cmd {
    char op;
    int64_t arg;
};
struct reply {
    char ok; /* 'k' or 'x' */
    int err;
    int64_t val;
};

struct peer {
    pid_t pid;
    int ctl;      /* our end of the command socketpair */
    int fd;       /* our end of the connection */
    int listener; /* ours (PEER_CONNECTS), or -1 */
    struct sockaddr_in addr;
    struct stream up, down; /* what we sent / received */
    int pending;            /* commands sent, replies not yet read */
};

enum peer_mode {
    PEER_CONNECTS, /* we listen and accept; the peer connects */
    PEER_LISTENS,  /* the peer listens and accepts; we connect */
};

typedef void (*peer_fn)(int conn, int ctl, const struct sockaddr_in *addr);

static void reply_to(int ctl, char ok, int err, int64_t val) {
    struct reply r = {ok, err, val};
    if (write(ctl, &r, sizeof r) != sizeof r) _exit(5);
}

/* The default peer: obey commands until EOF on ctl or 'X'. */
static void peer_loop(int conn, int ctl, const struct sockaddr_in *addr) {
    (void)addr;
    struct stream up = stream_new(SEED_UP), down = stream_new(SEED_DOWN);
    struct cmd c;
    /* Bounded reads: a read that never completes fails after 10 s. */
    struct timeval tv = {10, 0};
    setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (read(ctl, &c, sizeof c) == sizeof c) {
        switch (c.op) {
        case 'W': /* write arg bytes */
            send_stream(conn, &down, (size_t)c.arg);
            reply_to(ctl, 'k', 0, (int64_t)down.hash);
            break;
        case 'R':   /* read and verify exactly arg bytes */
        case 'T': { /* read and verify until arg bytes in all */
            static char buf[65536];
            int64_t n = c.op == 'R' ? c.arg : c.arg - (int64_t)up.off;
            int err = 0;
            while (n > 0) {
                ssize_t r = recv(conn, buf, n < (int64_t)sizeof buf ? (size_t)n : sizeof buf, 0);
                if (r < 0 && errno == EINTR) continue;
                if (r <= 0) {
                    err = r == 0 ? -1 : errno;
                    break;
                }
                uint64_t bad;
                if (stream_check(&up, buf, (size_t)r, &bad)) {
                    err = EBADMSG;
                    break;
                }
                n -= r;
            }
            reply_to(ctl, err ? 'x' : 'k', err, err ? (int64_t)up.off : (int64_t)up.hash);
            break;
        }
        case 'S':
            sleep_ms((int)c.arg);
            reply_to(ctl, 'k', 0, 0);
            break;
        case 'C':
            reply_to(ctl, close(conn) == 0 ? 'k' : 'x', errno, 0);
            break;
        case 'H':
            reply_to(ctl, shutdown(conn, SHUT_WR) == 0 ? 'k' : 'x', errno, 0);
            break;
        case 'X':
            reply_to(ctl, 'k', 0, 0);
            _exit(0);
        default:
            _exit(6);
        }
    }
    _exit(0);
}

/* Close every fd from 3 up except `keep`: the peer must not hold the
 * parent's other connections (that would change their close semantics). */
static void close_others(int keep) {
    if (keep > 3) close_range(3, (unsigned)keep - 1, 0);
    close_range((unsigned)keep + 1, ~0U, 0);
}

static struct peer peer_start(enum peer_mode mode, peer_fn fn) {
    struct peer p;
    memset(&p, 0, sizeof p);
    p.listener = -1;
    p.fd = -1;
    p.up = stream_new(SEED_UP);
    p.down = stream_new(SEED_DOWN);
    int sv[2];
    check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
    if (mode == PEER_CONNECTS) p.listener = listener(0, &p.addr);
    p.pid = fork();
    check(p.pid >= 0, "fork");
    if (p.pid == 0) {
        g_case = "peer";
        close_others(sv[1]);
        watchdog(30);
        int conn;
        if (mode == PEER_CONNECTS) {
            conn = connect_to(&p.addr, 0);
        } else {
            struct sockaddr_in a;
            int l = listener(0, &a);
            reply_to(sv[1], 'k', 0, ntohs(a.sin_port));
            p.addr = a;
            conn = accept(l, NULL, NULL);
            check(conn >= 0, "accept");
            close(l);
        }
        fn(conn, sv[1], &p.addr);
        _exit(0);
    }
    g_peer_pid = p.pid;
    close(sv[1]);
    p.ctl = sv[0];
    if (mode == PEER_CONNECTS) {
        p.fd = accept(p.listener, NULL, NULL);
        check(p.fd >= 0, "accept");
    } else {
        struct reply r;
        check(read(p.ctl, &r, sizeof r) == sizeof r, "peer did not start");
        p.addr = g_kernel ? addr_of("127.0.0.1", (int)r.val) : addr_of(g_host, (int)r.val);
        g_port++; /* the peer took it */
    }
    return p;
}

/* A peer running the command loop; our end of the connection in p.fd. */
static struct peer peer_open(enum peer_mode mode) {
    struct peer p = peer_start(mode, peer_loop);
    if (mode == PEER_LISTENS) p.fd = connect_to(&p.addr, 0);
    return p;
}

static void peer_send(struct peer *p, char op, int64_t arg) {
    struct cmd c = {op, arg};
    check(write(p->ctl, &c, sizeof c) == sizeof c, "command %c to peer", op);
    p->pending++;
}

/* The next reply; fails after `ms`. */
static struct reply peer_reply_within(struct peer *p, int ms) {
    struct reply r;
    check(p->pending > 0, "no command pending");
    int ev = poll1(p->ctl, POLLIN, ms);
    check(ev, "peer: no reply within %d ms", ms);
    ssize_t n = read(p->ctl, &r, sizeof r);
    check(n == sizeof r, "peer died (read %zd)", n);
    p->pending--;
    return r;
}

static struct reply peer_reply(struct peer *p) { return peer_reply_within(p, 15000); }

/* Send a command, wait for its reply, fail unless it succeeded. */
static struct reply peer_do(struct peer *p, char op, int64_t arg) {
    peer_send(p, op, arg);
    struct reply r = peer_reply(p);
    check(r.ok == 'k', "peer %c %lld failed: %s (at %lld)", op, (long long)arg,
          r.err == -1 ? "EOF" : ename(r.err), (long long)r.val);
    return r;
}

/* The peer's reply to 'W' carries its checksum of everything it wrote. */
static void expect_down_hash(struct peer *p, struct reply r) {
    check((uint64_t)r.val == p->down.hash, "checksum of %llu bytes received differs from the sender's",
          (unsigned long long)p->down.off);
}

/* Everything we sent has been read and verified by the peer. */
static void verify_up(struct peer *p) {
    struct reply r = peer_do(p, 'T', (int64_t)p->up.off);
    check((uint64_t)r.val == p->up.hash, "peer's checksum of %llu bytes differs from ours",
          (unsigned long long)p->up.off);
}

/* Tell the peer to exit and reap it. */
static void peer_end(struct peer *p) {
    while (p->pending) peer_reply(p);
    peer_send(p, 'X', 0);
    peer_reply(p);
    int st;
    check(waitpid(p->pid, &st, 0) == p->pid, "waitpid");
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "peer exit status %#x", st);
    close(p->ctl);
    if (p->fd >= 0) close(p->fd);
    if (p->listener >= 0) close(p->listener);
    g_peer_pid = 0;
}

/* Common start: argv CASE HOST PORT; watchdog; no SIGPIPE deaths. */
static void rd_init(int argc, char **argv, int watchdog_secs) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s CASE HOST PORT\n", argv[0]);
        exit(2);
    }
    g_case = argv[1];
    g_host = argv[2];
    g_port = atoi(argv[3]);
    g_kernel = strcmp(g_host, "kernel") == 0;
    signal(SIGPIPE, SIG_IGN);
    watchdog(watchdog_secs);
}

#endif
