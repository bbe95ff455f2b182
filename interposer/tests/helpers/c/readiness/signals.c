/* Signals and blocking calls on a connection. CASE:
 *   recv_intr     SIGALRM (handler without SA_RESTART) at 100 ms interrupts
 *                 a blocking recv: -1 EINTR; the peer's data (sent at
 *                 500 ms) is read afterwards
 *   recv_restart  the same with SA_RESTART: the recv goes on and returns
 *                 the data
 *   send_intr     the connection is full, the peer not reading: SIGALRM
 *                 (without SA_RESTART) at 100 ms interrupts a blocking send:
 *                 -1 EINTR (nothing was sent)
 *   send_restart  the same with SA_RESTART: the send completes once the
 *                 peer reads (at 500 ms), everything checked
 *   storm         a SIGALRM handler firing every 1 ms (setitimer) write()s a
 *                 byte on connection A and close()s one of 200 other
 *                 connections, while the main thread does send/recv round
 *                 trips on connection C for 2 s: no deadlock, no crash; A's
 *                 bytes arrive in order
 * Prints "result ..." lines and "ok CASE". */
#include "rd.h"

static volatile sig_atomic_t fired;
static void on_alarm(int sig) {
    (void)sig;
    fired++;
}

static void arm(int restart) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigemptyset(&sa.sa_mask);
    check(sigaction(SIGALRM, &sa, NULL) == 0, "sigaction");
    struct itimerval t = {.it_value = {0, 100 * 1000}};
    check(setitimer(ITIMER_REAL, &t, NULL) == 0, "setitimer");
}

static void case_recv(struct peer *p, int restart) {
    peer_send(p, 'S', 500);
    peer_send(p, 'W', 5);
    arm(restart);
    char buf[16];
    double t0 = now_ms();
    ssize_t n = recv(p->fd, buf, sizeof buf, 0);
    int err = errno;
    double dt = now_ms() - t0;
    say("result recv %s after %.0f ms, signals %d", n >= 0 ? "data" : ename(err), dt, (int)fired);
    check(fired == 1, "%d signals", (int)fired);
    if (restart) {
        check(n == 5, "SA_RESTART: recv returned %zd (%s), want the 5 bytes", n, n < 0 ? ename(err) : "-");
        check(dt >= 400, "SA_RESTART: recv returned after %.0f ms, before the data was sent", dt);
    } else {
        check(n < 0 && err == EINTR, "no SA_RESTART: recv returned %zd (%s) after %.0f ms, want EINTR", n,
              n < 0 ? ename(err) : "-", dt);
        check(dt < 400, "EINTR only after %.0f ms", dt);
        n = recv(p->fd, buf, sizeof buf, 0);
        check(n == 5, "recv after EINTR returned %zd", n);
    }
    uint64_t bad;
    check(stream_check(&p->down, buf, 5, &bad) == 0, "wrong data");
    peer_reply(p);
    expect_down_hash(p, peer_reply(p));
    say("ok %s", g_case);
}

static void case_send(struct peer *p, int restart) {
    set_nonblock(p->fd, 1);
    size_t filled = fill(p->fd, &p->up);
    set_nonblock(p->fd, 0);
    say("result filled %zu", filled);
    peer_send(p, 'S', 500);
    static char buf[65536];
    struct stream save = p->up;
    stream_gen(&p->up, buf, sizeof buf);
    /* The peer reads everything, this send included, after 500 ms. */
    peer_send(p, 'T', (int64_t)p->up.off);
    arm(restart);
    double t0 = now_ms();
    ssize_t n = send(p->fd, buf, sizeof buf, MSG_NOSIGNAL);
    int err = errno;
    double dt = now_ms() - t0;
    say("result send %s after %.0f ms, signals %d", n >= 0 ? "count" : ename(err), dt, (int)fired);
    if (n >= 0) say("result send-count %zd", n);
    check(fired == 1, "%d signals", (int)fired);
    if (n < 0 || (size_t)n < sizeof buf) {
        /* Not all of it went: the peer must not wait for the rest. */
        p->up = save;
        if (n > 0) stream_gen(&p->up, buf, (size_t)n);
        send_stream(p->fd, &p->up, sizeof buf - (n > 0 ? (size_t)n : 0));
    }
    struct reply r = peer_reply(p); /* 'S' */
    r = peer_reply(p);
    check(r.ok == 'k' && (uint64_t)r.val == p->up.hash, "peer: checksum of %llu bytes differs",
          (unsigned long long)p->up.off);
    if (restart) {
        check(n == (ssize_t)sizeof buf, "SA_RESTART: send returned %zd (%s), want %zu", n, n < 0 ? ename(err) : "-",
              sizeof buf);
        check(dt >= 400, "SA_RESTART: send returned after %.0f ms, before the peer read", dt);
    } else {
        check(n < 0 && err == EINTR, "no SA_RESTART: blocked send returned %zd (%s) after %.0f ms, want EINTR at ~100 ms", n,
              n < 0 ? ename(err) : "-", dt);
        check(dt < 400, "EINTR only after %.0f ms", dt);
    }
    say("ok %s", g_case);
}

/* ---- storm ---- */

#define POOL 200
static int conn_a, pool[POOL];
static volatile int pool_next;
static volatile sig_atomic_t storm_on;
static volatile long h_calls, h_writes, h_closes;
static volatile long h_write_err[160], h_close_err[160];
static volatile uint8_t a_seq;

static void on_tick(int sig) {
    (void)sig;
    int saved = errno;
    if (storm_on) {
        h_calls++;
        uint8_t b = a_seq;
        ssize_t w = write(conn_a, &b, 1);
        if (w == 1) {
            a_seq++;
            h_writes++;
        } else {
            h_write_err[errno < 160 ? errno : 0]++;
        }
        if (pool_next < POOL) {
            if (close(pool[pool_next]) == 0) h_closes++;
            else h_close_err[errno < 160 ? errno : 0]++;
            pool_next++;
        }
    }
    errno = saved;
}

/* The peer for the storm: connection A (count and check the bytes), C
 * (echo), POOL more it just holds; "X" on ctl: reply with A's count. */
static void storm_peer(int a, int ctl, const struct sockaddr_in *addr) {
    int c = connect_to(addr, 0);
    for (int i = 0; i < POOL; i++) check(connect_to(addr, 0) >= 0, "pool connect %d", i);
    long a_bytes = 0;
    int a_bad = 0, a_eof = 0;
    static char buf[65536];
    for (;;) {
        struct pollfd p[3] = {{.fd = a, .events = POLLIN}, {.fd = c, .events = POLLIN}, {.fd = ctl, .events = POLLIN}};
        check(poll(p, a_eof ? 3 : 3, 10000) > 0, "peer: idle 10 s");
        if (p[0].revents && !a_eof) {
            ssize_t n = recv(a, buf, sizeof buf, MSG_DONTWAIT);
            if (n == 0) a_eof = 1, p[0].fd = -1;
            for (ssize_t i = 0; i < n; i++)
                if ((uint8_t)buf[i] != (uint8_t)(a_bytes++)) a_bad = 1;
        }
        if (p[1].revents) {
            ssize_t n = recv(c, buf, sizeof buf, MSG_DONTWAIT);
            check(n != 0, "peer: C closed");
            if (n > 0) {
                for (ssize_t d = 0; d < n;) {
                    ssize_t w = send(c, buf + d, (size_t)(n - d), MSG_NOSIGNAL);
                    check(w > 0, "peer: echo");
                    d += w;
                }
            }
        }
        if (p[2].revents) {
            struct cmd cm;
            if (read(ctl, &cm, sizeof cm) != sizeof cm) _exit(7);
            if (cm.op == 'X') {
                /* Whatever of A is still in flight. */
                ssize_t n;
                while ((n = recv(a, buf, sizeof buf, MSG_DONTWAIT)) > 0)
                    for (ssize_t i = 0; i < n; i++)
                        if ((uint8_t)buf[i] != (uint8_t)(a_bytes++)) a_bad = 1;
                reply_to(ctl, a_bad ? 'x' : 'k', 0, a_bytes);
                _exit(0);
            }
        }
    }
}

static void case_storm(void) {
    struct peer p = peer_start(PEER_CONNECTS, storm_peer);
    conn_a = p.fd;
    int c = accept(p.listener, NULL, NULL);
    check(c >= 0, "accept C");
    for (int i = 0; i < POOL; i++) {
        pool[i] = accept(p.listener, NULL, NULL);
        check(pool[i] >= 0, "accept pool %d", i);
    }
    checkpoint();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_tick;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    check(sigaction(SIGALRM, &sa, NULL) == 0, "sigaction");
    storm_on = 1;
    struct itimerval t = {.it_interval = {0, 1000}, .it_value = {0, 1000}};
    check(setitimer(ITIMER_REAL, &t, NULL) == 0, "setitimer");
    struct stream up = stream_new(SEED_UP), back = stream_new(SEED_UP);
    static char buf[4096], in[4096];
    long rounds = 0, eintr = 0;
    double t0 = now_ms();
    while (now_ms() - t0 < 2000) {
        size_t n = 1 + (size_t)(rounds * 37 % 4096);
        stream_gen(&up, buf, n);
        for (size_t d = 0; d < n;) {
            ssize_t w = send(c, buf + d, n - d, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR) {
                eintr++;
                continue;
            }
            check(w > 0, "send on C, round %ld", rounds);
            d += (size_t)w;
        }
        for (size_t d = 0; d < n;) {
            ssize_t r = recv(c, in, n - d, 0);
            if (r < 0 && errno == EINTR) {
                eintr++;
                continue;
            }
            check(r > 0, "recv on C, round %ld: %zd", rounds, r);
            uint64_t bad;
            check(stream_check(&back, in, (size_t)r, &bad) == 0, "C: wrong echo at %llu", (unsigned long long)bad);
            d += (size_t)r;
        }
        rounds++;
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    storm_on = 0;
    /* A close() that failed: is the fd still open (and still ours)? */
    int still_open = 0;
    for (int i = 0; i < pool_next; i++)
        if (fcntl(pool[i], F_GETFD) >= 0) still_open++;
    say("result storm closed-fds-still-open=%d (of %d close calls)", still_open, pool_next);
    check(back.hash == up.hash, "C: checksums differ");
    char errs[256] = "";
    for (int e = 0; e < 160; e++)
        if (h_write_err[e]) snprintf(errs + strlen(errs), sizeof errs - strlen(errs), " write:%s=%ld", ename(e), h_write_err[e]);
    for (int e = 0; e < 160; e++)
        if (h_close_err[e]) snprintf(errs + strlen(errs), sizeof errs - strlen(errs), " close:%s=%ld", ename(e), h_close_err[e]);
    say("result storm rounds=%ld eintr=%ld handler-calls=%ld writes-ok=%ld closes-ok=%ld errors:%s", rounds, eintr, h_calls,
        h_writes, h_closes, errs[0] ? errs : " none");
    peer_send(&p, 'X', 0);
    struct reply r = peer_reply(&p);
    say("result storm A-bytes-received=%lld %s", (long long)r.val, r.ok == 'k' ? "in-order" : "OUT-OF-ORDER");
    check(r.ok == 'k', "A: bytes out of order");
    check(r.val == h_writes, "A: %lld bytes arrived, the handler wrote %ld", (long long)r.val, h_writes);
    check(h_calls > 100 && rounds > 100, "too little happened: %ld handler calls, %ld rounds", h_calls, rounds);
    int st;
    check(waitpid(p.pid, &st, 0) == p.pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "peer exit %#x", st);
    say("ok storm");
}

int main(int argc, char **argv) {
    rd_init(argc, argv, 30);
    if (!strcmp(g_case, "storm")) {
        case_storm();
        return 0;
    }
    struct peer p = peer_open(PEER_CONNECTS);
    checkpoint();
    if (!strcmp(g_case, "recv_intr")) case_recv(&p, 0);
    else if (!strcmp(g_case, "recv_restart")) case_recv(&p, 1);
    else if (!strcmp(g_case, "send_intr")) case_send(&p, 0);
    else if (!strcmp(g_case, "send_restart")) case_send(&p, 1);
    else fail("unknown case");
    peer_end(&p);
    return 0;
}
