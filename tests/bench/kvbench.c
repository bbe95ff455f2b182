/*
 * kvbench: a key-value server under load through the ordinary BSD sockets
 * API, two processes in one invocation (the program forks: the child is the
 * server, the parent the load client that measures). Run it plain for kernel
 * TCP and Unix sockets, and under LD_PRELOAD=libshmnet.so for the emulated
 * network. Issue 14's rows of `make bench` (docs/benchmarks.md).
 *
 * Usage: kvbench [--tcp ADDR | --unix PATH] [--port P] [--conns N]
 *                [--pipeline P] [--secs S] [--warmup S] [--idle N]
 *                [--perf-ctl CTL,ACK] [--reqs N]
 *   --tcp      IPv4 address to listen on and connect to (default 127.0.0.1)
 *   --unix     path of a Unix stream socket instead of TCP
 *   --port     TCP port (default 0: any free port)
 *   --conns    client connections, all connected before the timed part
 *              (default 1)
 *   --pipeline requests outstanding per connection (default 1: request,
 *              response, request, ...)
 *   --secs     length of the timed part in seconds (default 1); --idle: how
 *              long the connections are held idle before the check
 *   --warmup   load before the timed part, in seconds (default 0.2)
 *   --idle N   instead of load: open N connections, measure what they cost,
 *              hold them idle for --secs, then one request on each
 *   --perf-ctl perf stat's control and ack FIFOs (perf stat -D -1
 *              --control fifo:CTL,ACK): the client enables the events at the
 *              start of the timed part and disables them at its end, so a
 *              count of the whole fork tree covers exactly the requests in
 *              "reqs" (kv mode only)
 *   --reqs     end the timed part after N replies (or at --secs, whichever
 *              comes first): a fixed amount of work, for counting
 *              instructions under callgrind (scripts/callgrind-kv.sh)
 *
 * Server: one thread, epoll (level-triggered), non-blocking sockets, an
 * open-addressing hash table. Client: one thread, epoll, --conns non-blocking
 * connections with --pipeline requests in flight on each.
 *
 * Protocol: 32-byte requests and replies (struct kvmsg): GET or SET of an
 * 8-byte key with a 16-byte value; the reply echoes op, sequence number and
 * key; GET returns the stored value (status NOTFOUND and zeros if none), SET
 * echoes the value stored. Each connection uses its own 16 keys, so the
 * server answers a connection's requests in the order sent and the client
 * knows every reply exactly (it keeps a copy of what it stored): every reply
 * is compared, all 32 bytes, and any difference fails the run. One request
 * in four is a SET.
 *
 * kv mode prints one JSON object: requests answered in the timed part
 * ("reqs", "rps"), CPU (user + system, getrusage) of the client and of the
 * server over the timed part ("client_cpu_s", "server_cpu_s", the sum
 * "cpu_s", "cpu_us_per_req" = cpu_s / reqs), and "reqs_total": every reply
 * of the whole run (warm-up, timed part, and the replies still in flight
 * when it ended). The server takes its getrusage when the client tells it
 * over a pipe that the timed part starts and ends.
 *
 * idle mode prints one JSON object: connections opened (client) and
 * accepted (server), "open_secs" (first connect until the server has
 * accepted them all), each process's VmRSS, open fds and shared-memory Rss
 * (mappings whose path contains "shmnet": libshmnet's segments; 0 for
 * kernel sockets) after opening, their baselines before it ("client_base",
 * "server_base") and the difference per connection ("..._per_conn"), the
 * change of the kernel's Slab (/proc/meminfo, system-wide: where kernel
 * sockets keep their state), CPU of both while held idle in epoll_wait
 * ("hold_..."), connections the server still had open after the hold, and
 * "checked": connections whose one request was answered correctly
 * afterwards. The server allocates a connection's buffers at its first
 * request, so RSS per connection is the transport's (and epoll's), not
 * kvbench's. If opening fails (EMFILE, ENOBUFS, a connect that does not
 * complete in 5 s, a server whose accept fails), "failed_at" is how many
 * were open and "error" says why, and the exit status is still 0.
 *
 * Errors go to stderr as "kvbench: ..." with exit status 1 (a wrong reply,
 * a connection lost, a failed connect in kv mode). Both processes give up
 * after --secs + 30 s (SIGALRM). RLIMIT_NOFILE's soft limit is raised to the
 * hard one.
 *
 * Build: cc -O2 -Wall -o kvbench tests/bench/kvbench.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "benchnet.h"

static int conns = 1;
static int pipeline = 1;
static double secs = 1;
static double warmup = 0.2;
static int idle;
static const char *perf_ctl, *perf_ack;
static const char *who = "client";
static const char *volatile phase = "starting";
static unsigned limit; /* SIGALRM after this many seconds */

#define MSG 32
#define KEYS 16 /* keys per connection */
#define SBUF 4096 /* server buffer per connection and direction */
#define MAXEV 512
#define RESERVE 16 /* fds kept back to report with when the table is full */
#define CONNECT_TIMEOUT 5.0

enum { OP_GET = 1, OP_SET = 2 };
enum { ST_OK = 0, ST_NOTFOUND = 1, ST_FULL = 2 };
#define KV_MAGIC 0x4b56

struct kvmsg {
    uint16_t magic;
    uint8_t op;
    uint8_t status; /* reply only */
    uint32_t seq;   /* the connection's request number, echoed */
    uint64_t key;
    unsigned char val[16];
};
_Static_assert(sizeof(struct kvmsg) == MSG, "32-byte messages");

/* Fails with a message and, if with_errno, strerror(errno). */
__attribute__((noreturn)) static void vfail(int with_errno, const char *fmt, va_list ap)
{
    int e = errno;
    fprintf(stderr, "kvbench %s (%s): ", idle ? "idle" : "kv", who);
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

static void on_alarm(int sig)
{
    (void)sig;
    char msg[256];
    int n = snprintf(msg, sizeof msg, "kvbench %s (%s): gave up after %u s (%s)\n", idle ? "idle" : "kv",
                     who, limit, phase);
    if (n > 0)
        (void)!write(2, msg, n < (int)sizeof msg ? (size_t)n : sizeof msg - 1);
    _exit(1);
}

static void usage(void)
{
    fprintf(stderr, "usage: kvbench [--tcp ADDR | --unix PATH] [--port P] [--conns N] [--pipeline P] "
                    "[--secs S] [--warmup S] [--idle N] [--perf-ctl CTL,ACK] [--reqs N]\n");
    exit(2);
}

static double cpu_now(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) < 0)
        die("getrusage");
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        die("calloc");
    return p;
}

static void read_full(int fd, void *buf, size_t n, const char *what)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            die("read (%s)", what);
        if (r == 0)
            fail("%s: the other process is gone (EOF)", what);
        got += r;
    }
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
        put += r;
    }
}

static void set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        die("fcntl(O_NONBLOCK)");
}

/* A non-blocking connection to the server, or -1 and why in err. Connect
 * without blocking and wait for it with poll, so that a server that stopped
 * accepting cannot hang the client; a Unix socket whose backlog is full
 * says EAGAIN, so try again until the timeout. */
static int open_conn(int p, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len = address(&ss, p);
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        snprintf(err, errlen, "fcntl(O_NONBLOCK): %s", strerror(errno));
        close(fd);
        return -1;
    }
    double deadline = now() + CONNECT_TIMEOUT;
    for (;;) {
        if (connect(fd, (struct sockaddr *)&ss, len) == 0)
            break;
        if (errno == EAGAIN && unix_path && now() < deadline) {
            usleep(1000);
            continue;
        }
        if (errno != EINPROGRESS && errno != EINTR) {
            snprintf(err, errlen, "connect: %s", strerror(errno));
            close(fd);
            return -1;
        }
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        int r;
        do {
            int ms = (int)((deadline - now()) * 1000) + 1;
            r = poll(&pf, 1, ms > 0 ? ms : 0);
        } while (r < 0 && errno == EINTR);
        if (r < 0) {
            snprintf(err, errlen, "poll after connect: %s", strerror(errno));
            close(fd);
            return -1;
        }
        if (r == 0) {
            snprintf(err, errlen, "connect did not complete within %.0f s", CONNECT_TIMEOUT);
            close(fd);
            return -1;
        }
        int e = 0;
        socklen_t el = sizeof e;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0)
            e = errno;
        if (e) {
            snprintf(err, errlen, "connect: %s", strerror(e));
            close(fd);
            return -1;
        }
        break;
    }
    int one = 1;
    if (!unix_path && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) {
        snprintf(err, errlen, "setsockopt(TCP_NODELAY): %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void epoll_set(int ep, int op, int fd, uint32_t events, void *ptr)
{
    struct epoll_event ev = {.events = events, .data.ptr = ptr};
    if (epoll_ctl(ep, op, fd, &ev) < 0)
        die("epoll_ctl(%s, fd %d)", op == EPOLL_CTL_ADD ? "ADD" : op == EPOLL_CTL_MOD ? "MOD" : "DEL", fd);
}

/* ---- what a process costs: /proc/self ---- */

struct usage {
    double rss_kib, fds, shm_kib;
};

static int reserve_fds[RESERVE];
static int reserved;

static void reserve(void) /* as many as it can get, up to RESERVE */
{
    for (reserved = 0; reserved < RESERVE; reserved++)
        if ((reserve_fds[reserved] = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0)
            break;
}

static void unreserve(void)
{
    while (reserved > 0)
        close(reserve_fds[--reserved]);
}

/* VmRSS, entries of /proc/self/fd (not counting the one reading it) and the
 * summed Rss of the mappings whose path contains "shmnet" (libshmnet's
 * memfds, "/memfd:shmnet-conn (deleted)"). Call without the reserve held. */
static void measure(struct usage *u)
{
    memset(u, 0, sizeof *u);
    char line[512];
    FILE *f = fopen("/proc/self/status", "re");
    if (!f)
        die("open /proc/self/status");
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6))
            u->rss_kib = strtod(line + 6, NULL);
    fclose(f);
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        die("opendir /proc/self/fd");
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    u->fds = n - 1;
    f = fopen("/proc/self/smaps", "re");
    if (!f)
        die("open /proc/self/smaps");
    int ours = 0;
    while (fgets(line, sizeof line, f)) {
        size_t l = strlen(line);
        int complete = l > 0 && line[l - 1] == '\n';
        if ((line[0] >= '0' && line[0] <= '9') || (line[0] >= 'a' && line[0] <= 'f'))
            ours = strstr(line, "shmnet") != NULL; /* a mapping's header line */
        else if (ours && !strncmp(line, "Rss:", 4))
            u->shm_kib += strtod(line + 4, NULL);
        while (!complete && fgets(line, sizeof line, f)) { /* the rest of a long line */
            l = strlen(line);
            complete = l > 0 && line[l - 1] == '\n';
        }
    }
    fclose(f);
}

/* The kernel's slab memory (system-wide: socket buffers' bookkeeping, TCP
 * and Unix sockets, files, memfds; other processes move it too). */
static double slab_kib(void)
{
    char line[256];
    double kib = 0;
    FILE *f = fopen("/proc/meminfo", "re");
    if (!f)
        die("open /proc/meminfo");
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "Slab:", 5))
            kib = strtod(line + 5, NULL);
    fclose(f);
    return kib;
}

/* ---- control messages between the processes (pipes) ---- */

enum { CTL_START = 'S', CTL_END = 'E', CTL_IDLE = 'I' };

struct ctlmsg {
    uint32_t cmd;
    uint32_t arg;
};

struct idle_report {
    int32_t accepted;
    int32_t accept_errno;
    struct usage base, after;
};

struct end_report { /* the answer to CTL_END */
    double cpu_s; /* since CTL_START */
    int32_t open; /* connections open */
};

/* ---- server ---- */

enum { T_LISTEN = 1, T_CTL, T_CONN };

struct kind {
    int type;
};

struct sconn {
    int type; /* T_CONN */
    int fd;
    int want_out; /* waiting for EPOLLOUT (not reading meanwhile) */
    size_t in_len, out_off, out_len;
    unsigned char *in, *out; /* SBUF each, from the first request on (idle ones have none) */
};

struct slot {
    uint64_t key;
    uint32_t used;
    unsigned char val[16];
};

static struct slot *table;
static size_t tmask;

static uint64_t mix(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    return k ^ (k >> 33);
}

static struct slot *lookup(uint64_t key, int insert)
{
    for (size_t i = mix(key) & tmask, n = 0; n <= tmask; i = (i + 1) & tmask, n++) {
        struct slot *s = &table[i];
        if (s->used && s->key == key)
            return s;
        if (!s->used) {
            if (!insert)
                return NULL;
            s->used = 1;
            s->key = key;
            return s;
        }
    }
    return NULL; /* full */
}

static void answer(const unsigned char *in, unsigned char *out)
{
    struct kvmsg q, r;
    memcpy(&q, in, MSG);
    if (q.magic != KV_MAGIC || (q.op != OP_GET && q.op != OP_SET))
        fail("bad request (magic %#x, op %u, seq %u)", q.magic, q.op, q.seq);
    memset(&r, 0, sizeof r);
    r.magic = KV_MAGIC;
    r.op = q.op;
    r.seq = q.seq;
    r.key = q.key;
    struct slot *s = lookup(q.key, q.op == OP_SET);
    if (q.op == OP_SET) {
        if (!s)
            r.status = ST_FULL;
        else {
            memcpy(s->val, q.val, 16);
            memcpy(r.val, q.val, 16);
        }
    } else if (!s)
        r.status = ST_NOTFOUND;
    else
        memcpy(r.val, s->val, 16);
    memcpy(out, &r, MSG);
}

static int sep; /* the server's epoll fd */

/* Writes what the connection owes; 0 if the client is gone. */
static int sflush(struct sconn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t r = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            break;
        if (r < 0 && (errno == EPIPE || errno == ECONNRESET))
            return 0;
        if (r < 0)
            die("write to a client");
        c->out_off += r;
    }
    if (c->out_off < c->out_len) {
        if (!c->want_out) {
            c->want_out = 1;
            epoll_set(sep, EPOLL_CTL_MOD, c->fd, EPOLLOUT, c);
        }
        return 1;
    }
    c->out_off = c->out_len = 0;
    if (c->want_out) {
        c->want_out = 0;
        epoll_set(sep, EPOLL_CTL_MOD, c->fd, EPOLLIN, c);
    }
    return 1;
}

/* One read, every whole request in it answered; 0 if the client is gone. */
static int sread(struct sconn *c)
{
    if (!c->in) {
        c->in = xcalloc(1, SBUF);
        c->out = xcalloc(1, SBUF);
    }
    ssize_t r = read(c->fd, c->in + c->in_len, SBUF - c->in_len);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return 1;
    if (r < 0 && errno == ECONNRESET)
        return 0;
    if (r < 0)
        die("read from a client");
    if (r == 0) {
        if (c->in_len)
            fail("a client closed with %zu bytes of a request sent", c->in_len);
        return 0;
    }
    c->in_len += r;
    size_t n = c->in_len / MSG;
    for (size_t i = 0; i < n; i++, c->out_len += MSG)
        answer(c->in + i * MSG, c->out + c->out_len);
    c->in_len -= n * MSG;
    memmove(c->in, c->in + n * MSG, c->in_len);
    return sflush(c);
}

static void sclose(struct sconn *c, int *open)
{
    epoll_set(sep, EPOLL_CTL_DEL, c->fd, 0, NULL);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
    (*open)--;
}

static void server(int lfd, int ctl, int rep)
{
    size_t want = 2 * (size_t)(conns > idle ? conns : idle) * KEYS, size = 1024;
    while (size < want)
        size *= 2;
    table = xcalloc(size, sizeof *table);
    tmask = size - 1;
    struct usage base;
    if (idle)
        measure(&base);
    reserve();
    sep = epoll_create1(EPOLL_CLOEXEC);
    if (sep < 0)
        die("epoll_create1");
    static struct kind lk = {T_LISTEN}, ck = {T_CTL};
    epoll_set(sep, EPOLL_CTL_ADD, lfd, EPOLLIN, &lk);
    epoll_set(sep, EPOLL_CTL_ADD, ctl, EPOLLIN, &ck);
    struct epoll_event evs[MAXEV];
    int open = 0, accepted = 0, accept_errno = 0;
    long idle_target = -1; /* idle mode: how many the client opened, once it said so */
    double cpu0 = 0, idle_deadline = 0;
    phase = "serving";
    for (;;) {
        int n = epoll_wait(sep, evs, MAXEV, idle_target >= 0 ? 50 : -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            struct kind *k = evs[i].data.ptr;
            if (k->type == T_LISTEN) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0 && (errno == EINTR || errno == ECONNABORTED))
                        continue;
                    if (fd < 0 && errno == EAGAIN)
                        break;
                    if (fd < 0 && idle) { /* report it: EMFILE, ENFILE, ENOBUFS, ... */
                        accept_errno = errno;
                        epoll_set(sep, EPOLL_CTL_DEL, lfd, 0, NULL);
                        break;
                    }
                    if (fd < 0)
                        die("accept (connection %d)", accepted + 1);
                    nodelay(fd);
                    struct sconn *c = xcalloc(1, sizeof *c);
                    c->type = T_CONN;
                    c->fd = fd;
                    epoll_set(sep, EPOLL_CTL_ADD, fd, EPOLLIN, c);
                    open++;
                    accepted++;
                }
            } else if (k->type == T_CTL) {
                struct ctlmsg m;
                ssize_t r = read(ctl, &m, sizeof m);
                if (r < 0 && errno == EINTR)
                    continue;
                if (r < 0)
                    die("read (control pipe)");
                if (r == 0)
                    goto done; /* the client is finished */
                if (r != sizeof m)
                    fail("short control message");
                if (m.cmd == CTL_START)
                    cpu0 = cpu_now();
                else if (m.cmd == CTL_END) {
                    struct end_report e = {.cpu_s = cpu_now() - cpu0, .open = open};
                    write_full(rep, &e, sizeof e);
                } else if (m.cmd == CTL_IDLE) {
                    idle_target = m.arg;
                    idle_deadline = now() + 10;
                } else
                    fail("unknown control message %u", m.cmd);
            } else {
                struct sconn *c = (struct sconn *)k;
                int ok = 1;
                if (c->want_out) /* not reading until the replies it owes are out */
                    ok = sflush(c);
                else if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                    ok = sread(c);
                if (!ok)
                    sclose(c, &open);
            }
        }
        if (idle_target >= 0 && (accepted >= idle_target || accept_errno || now() >= idle_deadline)) {
            struct idle_report ir = {.accepted = accepted, .accept_errno = accept_errno, .base = base};
            unreserve();
            measure(&ir.after);
            reserve();
            write_full(rep, &ir, sizeof ir);
            idle_target = -1;
        }
    }
done:
    (void)open;
}

/* ---- client ---- */

struct cconn {
    int fd, idx, want_out;
    unsigned outstanding;
    uint32_t seq_sent, seq_recv;
    uint64_t rng, stores;
    size_t in_len, out_off, out_len;
    unsigned char *in, *out;
    struct kvmsg *expect; /* the reply each request in flight must get, by seq % pipeline */
    unsigned char stored[KEYS];
    unsigned char value[KEYS][16];
};

static int cep; /* the client's epoll fd */
static int issuing;
static uint64_t replies, in_flight, gets, sets;
static uint64_t reqs_limit;   /* --reqs (0: none) */
static uint64_t stop_replies; /* cloop with a deadline also ends here (0: never) */

static uint64_t key_of(int idx, int k)
{
    return ((uint64_t)idx * KEYS + k + 1) * 0x9e3779b97f4a7c15ULL;
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void issue(struct cconn *c)
{
    uint64_t r = xorshift(&c->rng);
    int k = (int)(r % KEYS), set = ((r >> 32) & 3) == 0;
    struct kvmsg q, *e = &c->expect[c->seq_sent % pipeline];
    if (c->out_off) { /* keep the unsent part at the front: room for pipeline requests */
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    memset(&q, 0, sizeof q);
    q.magic = KV_MAGIC;
    q.op = set ? OP_SET : OP_GET;
    q.seq = c->seq_sent++;
    q.key = key_of(c->idx, k);
    *e = q;
    if (set) {
        uint64_t a = c->stores++ ^ ((uint64_t)c->idx << 40), b = q.key * 31 + a;
        memcpy(q.val, &a, 8);
        memcpy(q.val + 8, &b, 8);
        memcpy(c->value[k], q.val, 16);
        c->stored[k] = 1;
        memcpy(e->val, q.val, 16);
        sets++;
    } else {
        e->status = c->stored[k] ? ST_OK : ST_NOTFOUND;
        if (c->stored[k])
            memcpy(e->val, c->value[k], 16);
        gets++;
    }
    memcpy(c->out + c->out_len, &q, MSG);
    c->out_len += MSG;
    c->outstanding++;
    in_flight++;
}

static void cflush(struct cconn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t r = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            break;
        if (r < 0)
            die("write (connection %d)", c->idx);
        c->out_off += r;
    }
    if (c->out_off < c->out_len) {
        if (!c->want_out) {
            c->want_out = 1;
            epoll_set(cep, EPOLL_CTL_MOD, c->fd, EPOLLIN | EPOLLOUT, c);
        }
        return;
    }
    c->out_off = c->out_len = 0;
    if (c->want_out) {
        c->want_out = 0;
        epoll_set(cep, EPOLL_CTL_MOD, c->fd, EPOLLIN, c);
    }
}

static void show(char *buf, size_t len, const struct kvmsg *m)
{
    int n = snprintf(buf, len, "magic %#x op %u status %u seq %u key %#llx value ", m->magic, m->op, m->status,
                     m->seq, (unsigned long long)m->key);
    for (int i = 0; i < 16 && n > 0 && (size_t)n + 3 < len; i++)
        n += snprintf(buf + n, len - n, "%02x", m->val[i]);
}

static void cread(struct cconn *c)
{
    size_t cap = (size_t)(pipeline + 1) * MSG;
    ssize_t r = read(c->fd, c->in + c->in_len, cap - c->in_len);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r < 0)
        die("read (connection %d, %u requests in flight)", c->idx, c->outstanding);
    if (r == 0)
        fail("the server closed connection %d with %u requests in flight (%zu bytes of a reply read)", c->idx,
             c->outstanding, c->in_len);
    c->in_len += r;
    size_t n = c->in_len / MSG;
    if (n > c->outstanding)
        fail("connection %d: %zu replies with %u requests in flight", c->idx, n, c->outstanding);
    for (size_t i = 0; i < n; i++) {
        const struct kvmsg *e = &c->expect[c->seq_recv % pipeline];
        if (memcmp(c->in + i * MSG, e, MSG)) {
            struct kvmsg got;
            char a[160], b[160];
            memcpy(&got, c->in + i * MSG, MSG);
            show(a, sizeof a, e);
            show(b, sizeof b, &got);
            fail("wrong reply on connection %d, request %u (reply %llu overall):\n  expected %s\n  got      %s",
                 c->idx, c->seq_recv, (unsigned long long)replies + 1, a, b);
        }
        c->seq_recv++;
        c->outstanding--;
        in_flight--;
        replies++;
    }
    c->in_len -= n * MSG;
    memmove(c->in, c->in + n * MSG, c->in_len);
    if (issuing)
        while (c->outstanding < (unsigned)pipeline)
            issue(c);
    cflush(c);
}

static struct cconn *new_cconn(int fd, int idx)
{
    struct cconn *c = xcalloc(1, sizeof *c);
    c->fd = fd;
    c->idx = idx;
    c->rng = mix(idx + 1) | 1;
    c->in = xcalloc(pipeline + 1, MSG);
    c->out = xcalloc(pipeline, MSG);
    c->expect = xcalloc(pipeline, sizeof *c->expect);
    return c;
}

/* Runs the event loop until `until` (monotonic time) or, with until 0, until
 * no request is in flight. */
static void cloop(double until)
{
    struct epoll_event evs[MAXEV];
    for (;;) {
        double t = now();
        if (until ? t >= until || (stop_replies && replies >= stop_replies) : in_flight == 0)
            return;
        int ms = until ? (int)((until - t) * 1000) + 1 : 1000;
        int n = epoll_wait(cep, evs, MAXEV, ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            struct cconn *c = evs[i].data.ptr;
            if (evs[i].events & EPOLLOUT)
                cflush(c);
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                cread(c);
        }
    }
}

static int ctl_fd, rep_fd, perf_ctl_fd = -1, perf_ack_fd = -1;

static void ctl(uint32_t cmd, uint32_t arg)
{
    struct ctlmsg m = {cmd, arg};
    write_full(ctl_fd, &m, sizeof m);
}

/* perf stat --control: "enable" or "disable", then wait for its "ack". */
static void perf_command(const char *cmd)
{
    if (perf_ctl_fd < 0)
        return;
    write_full(perf_ctl_fd, cmd, strlen(cmd));
    char buf[64];
    size_t got = 0;
    while (!memmem(buf, got, "ack\n", 4)) {
        if (got == sizeof buf)
            memmove(buf, buf + 32, got -= 32);
        ssize_t r = read(perf_ack_fd, buf + got, sizeof buf - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            die("read of perf's ack (%s)", perf_ack);
        got += r;
    }
}

static struct cconn **open_all(int p, int n, int *opened, char *err, size_t errlen)
{
    struct cconn **cs = xcalloc(n, sizeof *cs);
    for (*opened = 0; *opened < n; (*opened)++) {
        int fd = open_conn(p, err, errlen);
        if (fd < 0)
            break;
        cs[*opened] = new_cconn(fd, *opened);
    }
    return cs;
}

static void kv_client(int p)
{
    char err[256];
    int opened;
    phase = "connecting";
    struct cconn **cs = open_all(p, conns, &opened, err, sizeof err);
    if (opened < conns)
        fail("connection %d of %d: %s", opened + 1, conns, err);
    cep = epoll_create1(EPOLL_CLOEXEC);
    if (cep < 0)
        die("epoll_create1");
    for (int i = 0; i < conns; i++)
        epoll_set(cep, EPOLL_CTL_ADD, cs[i]->fd, EPOLLIN, cs[i]);
    phase = "warm-up";
    issuing = 1;
    for (int i = 0; i < conns; i++) {
        while (cs[i]->outstanding < (unsigned)pipeline)
            issue(cs[i]);
        cflush(cs[i]);
    }
    cloop(now() + warmup);

    phase = "timed part";
    perf_command("enable\n");
    ctl(CTL_START, 0);
    double c0 = cpu_now(), t0 = now();
    uint64_t r0 = replies;
    stop_replies = reqs_limit ? r0 + reqs_limit : 0;
    cloop(t0 + secs);
    stop_replies = 0;
    double t1 = now(), c1 = cpu_now();
    uint64_t r1 = replies;
    struct end_report er;
    ctl(CTL_END, 0);
    read_full(rep_fd, &er, sizeof er, "the server's CPU time");
    double server_cpu = er.cpu_s;
    perf_command("disable\n");

    phase = "draining";
    issuing = 0;
    cloop(0);
    for (int i = 0; i < conns; i++)
        close(cs[i]->fd);
    uint64_t reqs = r1 - r0;
    double el = t1 - t0, cpu = (c1 - c0) + server_cpu;
    printf("{\"mode\":\"kv\",\"transport\":\"%s\",\"addr\":\"%s\",\"conns\":%d,\"pipeline\":%d,\"reqs\":%llu,"
           "\"secs\":%.4f,\"rps\":%.1f,\"cpu_s\":%.4f,\"cpu_us_per_req\":%.4f,\"server_cpu_s\":%.4f,"
           "\"client_cpu_s\":%.4f,\"reqs_total\":%llu,\"gets\":%llu,\"sets\":%llu,\"warmup_secs\":%.3f,"
           "\"perf_window\":%s}\n",
           unix_path ? "unix" : "tcp", unix_path ? unix_path : tcp_addr, conns, pipeline,
           (unsigned long long)reqs, el, reqs / el, cpu, reqs ? cpu / reqs * 1e6 : 0.0, server_cpu, c1 - c0,
           (unsigned long long)replies, (unsigned long long)gets, (unsigned long long)sets, warmup,
           perf_ctl_fd >= 0 ? "true" : "false");
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++)
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    putchar('"');
}

static void idle_client(int p)
{
    char err[256] = "";
    struct usage base, after;
    measure(&base);
    double slab_base = slab_kib();
    reserve();
    int opened;
    phase = "opening";
    double t0 = now();
    struct cconn **cs = open_all(p, idle, &opened, err, sizeof err);
    unreserve(); /* room to report with, even after EMFILE */
    ctl(CTL_IDLE, opened);
    struct idle_report ir;
    phase = "waiting for the server to accept";
    read_full(rep_fd, &ir, sizeof ir, "the server's idle report");
    double open_secs = now() - t0;
    measure(&after);
    double slab_after = slab_kib();

    /* Held idle, both in epoll_wait: what the connections cost while nothing happens. */
    phase = "holding idle";
    cep = epoll_create1(EPOLL_CLOEXEC);
    if (cep < 0)
        die("epoll_create1");
    for (int i = 0; i < opened; i++)
        epoll_set(cep, EPOLL_CTL_ADD, cs[i]->fd, EPOLLIN, cs[i]);
    ctl(CTL_START, 0);
    double c0 = cpu_now(), h0 = now();
    struct epoll_event evs[MAXEV];
    int events = 0;
    for (double t = h0; t < h0 + secs; t = now()) {
        int n = epoll_wait(cep, evs, MAXEV, (int)((h0 + secs - t) * 1000) + 1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        if (n > 0) {
            events += n;
            break; /* nothing should happen; the check below says what */
        }
    }
    double hold = now() - h0, client_hold_cpu = cpu_now() - c0;
    struct end_report er;
    ctl(CTL_END, 0);
    read_full(rep_fd, &er, sizeof er, "the server's CPU time");

    /* Then one request on each (only if the server has them all: one it
     * never accepted would not answer). */
    int checked = 0;
    if (ir.accepted >= opened && opened > 0) {
        phase = "checking: one request per connection";
        issuing = 0;
        for (int i = 0; i < opened; i++) {
            issue(cs[i]);
            cflush(cs[i]);
        }
        cloop(0);
        checked = opened;
    }
    for (int i = 0; i < opened; i++)
        close(cs[i]->fd);

    double n = opened ? opened : 1;
    printf("{\"mode\":\"idle\",\"transport\":\"%s\",\"addr\":\"%s\",\"conns\":%d,\"opened\":%d,\"accepted\":%d,"
           "\"open_secs\":%.4f,",
           unix_path ? "unix" : "tcp", unix_path ? unix_path : tcp_addr, idle, opened, ir.accepted, open_secs);
    printf("\"client_rss_kib\":%.0f,\"server_rss_kib\":%.0f,\"client_fds\":%.0f,\"server_fds\":%.0f,"
           "\"client_shm_kib\":%.0f,\"server_shm_kib\":%.0f,",
           after.rss_kib, ir.after.rss_kib, after.fds, ir.after.fds, after.shm_kib, ir.after.shm_kib);
    printf("\"client_base\":{\"rss_kib\":%.0f,\"fds\":%.0f,\"shm_kib\":%.0f},"
           "\"server_base\":{\"rss_kib\":%.0f,\"fds\":%.0f,\"shm_kib\":%.0f},",
           base.rss_kib, base.fds, base.shm_kib, ir.base.rss_kib, ir.base.fds, ir.base.shm_kib);
    printf("\"client_rss_kib_per_conn\":%.3f,\"server_rss_kib_per_conn\":%.3f,"
           "\"client_fds_per_conn\":%.3f,\"server_fds_per_conn\":%.3f,"
           "\"client_shm_kib_per_conn\":%.3f,\"server_shm_kib_per_conn\":%.3f,",
           (after.rss_kib - base.rss_kib) / n, (ir.after.rss_kib - ir.base.rss_kib) / n, (after.fds - base.fds) / n,
           (ir.after.fds - ir.base.fds) / n, (after.shm_kib - base.shm_kib) / n,
           (ir.after.shm_kib - ir.base.shm_kib) / n);
    printf("\"hold_secs\":%.4f,\"hold_client_cpu_s\":%.4f,\"hold_server_cpu_s\":%.4f,\"hold_events\":%d,"
           "\"server_open_after_hold\":%d,\"checked\":%d,\"slab_kib\":%.0f,\"slab_kib_per_conn\":%.3f",
           hold, client_hold_cpu, er.cpu_s, events, er.open, checked, slab_after - slab_base,
           (slab_after - slab_base) / n);
    if (opened < idle || ir.accept_errno || ir.accepted < opened) {
        char why[512];
        int k = opened;
        if (opened < idle && ir.accept_errno)
            snprintf(why, sizeof why, "client, connection %d: %s; server accept after %d: %s", opened + 1, err,
                     ir.accepted, strerror(ir.accept_errno));
        else if (opened < idle)
            snprintf(why, sizeof why, "client, connection %d: %s", opened + 1, err);
        else if (ir.accept_errno)
            snprintf(why, sizeof why, "server accept after %d: %s", ir.accepted, strerror(ir.accept_errno));
        else
            snprintf(why, sizeof why, "server accepted %d of %d within 10 s", ir.accepted, opened);
        if (ir.accepted < k)
            k = ir.accepted;
        printf(",\"failed_at\":%d,\"error\":", k);
        json_str(why);
    }
    printf("}\n");
}

/* ---- driver ---- */

static int positive(const char *v, int *out)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x <= 0 || x > 10000000)
        return 0;
    *out = (int)x;
    return 1;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
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
        else if (!strcmp(a, "--conns")) {
            if (!positive(v, &conns))
                usage();
        } else if (!strcmp(a, "--pipeline")) {
            if (!positive(v, &pipeline))
                usage();
        } else if (!strcmp(a, "--idle")) {
            if (!positive(v, &idle))
                usage();
        } else if (!strcmp(a, "--reqs")) {
            int r;
            if (!positive(v, &r))
                usage();
            reqs_limit = (uint64_t)r;
        } else if (!strcmp(a, "--secs"))
            secs = strtod(v, &endp);
        else if (!strcmp(a, "--warmup"))
            warmup = strtod(v, &endp);
        else if (!strcmp(a, "--perf-ctl")) {
            char *c = strdup(v), *comma = c ? strchr(c, ',') : NULL;
            if (!comma)
                usage();
            *comma = 0;
            perf_ctl = c;
            perf_ack = comma + 1;
        } else
            usage();
    }
    if (secs <= 0 || warmup < 0)
        usage();
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            die("setrlimit(RLIMIT_NOFILE)");
    }

    int to_server[2], to_client[2];
    if (pipe2(to_server, O_CLOEXEC) < 0 || pipe2(to_client, O_CLOEXEC) < 0)
        die("pipe");
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    signal(SIGALRM, on_alarm);
    limit = (unsigned)(secs + warmup) + 30;
    if (pid == 0) {
        who = "server";
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed client */
        alarm(limit);
        close(to_server[1]);
        close(to_client[0]);
        int p, lfd = listener(4096, &p);
        set_nonblock(lfd);
        write_full(to_client[1], &p, sizeof p); /* ready: tell the client the port */
        server(lfd, to_server[0], to_client[1]);
        close(lfd);
        if (unix_path)
            unlink(unix_path);
        _exit(0);
    }
    alarm(limit);
    close(to_server[0]);
    close(to_client[1]);
    ctl_fd = to_server[1];
    rep_fd = to_client[0];
    if (perf_ctl && !idle) {
        if ((perf_ctl_fd = open(perf_ctl, O_WRONLY | O_CLOEXEC)) < 0)
            die("open %s", perf_ctl);
        if ((perf_ack_fd = open(perf_ack, O_RDONLY | O_CLOEXEC)) < 0)
            die("open %s", perf_ack);
    }
    int p;
    read_full(rep_fd, &p, sizeof p, "the server's port (it failed before listening)");
    if (idle)
        idle_client(p);
    else
        kv_client(p);
    close(ctl_fd); /* the server's signal to finish */
    phase = "waiting for the server to exit";
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
