/* Write readiness on a full connection. We (non-blocking) write until
 * EAGAIN; the peer, 300 ms later, reads 128 KiB (not everything) and stops
 * reading. CASE says how we wait for room:
 *   poll          poll(POLLOUT), level-triggered
 *   epoll_out_et  epoll EPOLLOUT|EPOLLET (EPOLLOUT alone)
 *   epoll_inout_et  epoll EPOLLIN|EPOLLOUT|EPOLLET (as nginx)
 * Each must see room and write more within 5 s of the peer's read. Then
 * the peer reads everything and checks it.
 *   epoll_lt      epoll EPOLLIN, level-triggered, with EPOLLOUT added by
 *                 EPOLL_CTL_MOD before each write and taken back after
 *                 (wrk, ae, libuv): 200 rounds of MOD IN|OUT (EPOLLOUT at
 *                 once) and MOD IN (no event in 20 ms); then EPOLLOUT stays
 *                 wanted while we fill, and comes back when the peer reads
 *                 (at most 20 returns while full)
 *   epoll_lt_nested, epoll_lt_poll, epoll_lt_fork: after MOD IN|OUT the
 *                 set, added to an outer set, polled, or waited on by a
 *                 forked child with the raw system call, is ready
 *   epoll_lt_reuse  after MOD IN|OUT the connection is dup'd and its number
 *                 (not DEL'd) closed and given to an eventfd added EPOLLIN
 *                 with another data: the set stays quiet until the eventfd
 *                 is signalled, then reports it alone (the connection's
 *                 registration once overwrote it, review H1)
 *   epoll_lt_one_slot  maxevents 1, EPOLLOUT wanted and an eventfd ready:
 *                 both are reported in 20 waits; data queued too: one
 *                 event IN|OUT (review H2: the slot went to EPOLLOUT)
 *   spin          the peer does not read: count how often poll(POLLOUT)
 *                 returns (each followed by a send that says EAGAIN) in
 *                 200 ms; a waiting writer should return about once.
 * Prints "result wake_ms X", "result spins N", "ok CASE ...". */
#include "rd.h"
#include <sys/eventfd.h>

#define PART (128 << 10)

static int try_send(struct peer *p) {
    static char buf[65536];
    struct stream save = p->up;
    stream_gen(&p->up, buf, sizeof buf);
    ssize_t w = send(p->fd, buf, sizeof buf, MSG_NOSIGNAL);
    if (w < 0 && errno == EAGAIN) {
        p->up = save;
        return 0;
    }
    check(w > 0, "send");
    p->up = save;
    stream_gen(&p->up, buf, (size_t)w);
    return (int)w;
}

static int lt_set(struct peer *p) {
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN, .data.fd = p->fd};
    check(epoll_ctl(ep, EPOLL_CTL_ADD, p->fd, &e) == 0, "EPOLL_CTL_ADD");
    struct epoll_event got;
    check(epoll_wait(ep, &got, 1, 0) == 0, "EPOLLIN alone, nothing sent: an event");
    return ep;
}

static void lt_mod(int ep, int fd, unsigned events) {
    struct epoll_event e = {.events = events, .data.fd = fd};
    check(epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e) == 0, "EPOLL_CTL_MOD %s", events_str(events));
}

/* What one epoll_wait of up to `ms` reports on `ep` (0: nothing). */
static unsigned lt_wait(int ep, int ms) {
    struct epoll_event got[4];
    int n = epoll_wait(ep, got, 4, ms);
    check(n >= 0 && n <= 1, "epoll_wait: %d events", n);
    return n ? got[0].events : 0;
}

static void case_lt_rounds(struct peer *p, int ep) {
    for (int i = 0; i < 200; i++) {
        lt_mod(ep, p->fd, EPOLLIN | EPOLLOUT);
        unsigned ev = lt_wait(ep, 1000);
        check(ev == EPOLLOUT, "round %d: MOD IN|OUT with room gave %s", i, events_str(ev));
        ev = lt_wait(ep, 0);
        check(ev == EPOLLOUT, "round %d: level-triggered EPOLLOUT not reported again: %s", i, events_str(ev));
        lt_mod(ep, p->fd, EPOLLIN);
        ev = lt_wait(ep, i % 20 ? 0 : 20);
        check(ev == 0, "round %d: MOD IN, nothing sent: %s", i, events_str(ev));
    }
}

/* After MOD IN|OUT, someone who sleeps on the set in the kernel: an
 * outer epoll set (how = 0), poll(2) on the epoll fd (1), or a forked child
 * that asks the kernel itself, past any preload (2). Each must see the set
 * ready (EPOLLOUT inside), as over kernel TCP. */
static void case_lt_other(struct peer *p, int how) {
    int ep = lt_set(p);
    case_lt_rounds(p, ep);
    lt_mod(ep, p->fd, EPOLLIN | EPOLLOUT);
    if (how == 0) {
        int outer = epoll_create1(0);
        struct epoll_event e = {.events = EPOLLIN, .data.fd = ep}, got;
        check(epoll_ctl(outer, EPOLL_CTL_ADD, ep, &e) == 0, "EPOLL_CTL_ADD of the set");
        check(epoll_wait(outer, &got, 1, 2000) == 1 && got.data.fd == ep, "the outer set: the inner one not ready");
        close(outer);
    } else if (how == 1) {
        check(poll1(ep, POLLIN, 2000) & POLLIN, "poll on the epoll fd: not readable");
    } else {
        pid_t c = fork();
        check(c >= 0, "fork");
        if (c == 0) {
            struct epoll_event got;
            long n = syscall(SYS_epoll_wait, ep, &got, 1, 2000);
            _exit(n == 1 && (got.events & EPOLLOUT) ? 0 : 1);
        }
        int st;
        check(waitpid(c, &st, 0) == c, "waitpid");
        check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the forked child asking the kernel got no EPOLLOUT");
    }
    unsigned ev = lt_wait(ep, 0);
    check(ev == EPOLLOUT, "the set itself: %s", events_str(ev));
    lt_mod(ep, p->fd, EPOLLIN);
    ev = lt_wait(ep, 20);
    check(ev == 0, "MOD IN, nothing sent: %s", events_str(ev));
    verify_up(p);
    say("ok %s", g_case);
}

static void case_wait(struct peer *p, int mech) {
    int ep = -1;
    if (mech == 3) {
        ep = lt_set(p);
        case_lt_rounds(p, ep);
        lt_mod(ep, p->fd, EPOLLIN | EPOLLOUT);
    } else if (mech) {
        ep = epoll_create1(0);
        struct epoll_event e = {.events = (mech == 1 ? 0 : EPOLLIN) | EPOLLOUT | EPOLLET, .data.fd = p->fd};
        check(epoll_ctl(ep, EPOLL_CTL_ADD, p->fd, &e) == 0, "EPOLL_CTL_ADD");
        struct epoll_event got;
        check(epoll_wait(ep, &got, 1, 0) == 1 && (got.events & EPOLLOUT), "fresh connection: no EPOLLOUT");
    }
    size_t filled = fill(p->fd, &p->up);
    say("result filled %zu", filled);
    peer_send(p, 'S', 300);
    peer_send(p, 'R', PART);
    double t0 = now_ms(), woken = -1;
    int returns = 0, again = 0;
    while (now_ms() - t0 < 5300) {
        int left = (int)(5300 - (now_ms() - t0));
        int ready;
        if (!mech) {
            ready = poll1(p->fd, POLLOUT, left) & POLLOUT;
        } else {
            struct epoll_event e;
            int n = epoll_wait(ep, &e, 1, left);
            check(n >= 0 || errno == EINTR, "epoll_wait");
            ready = n == 1 && (e.events & EPOLLOUT);
            if (n == 1) say("result event %s at %.0f ms", events_str(e.events), now_ms() - t0);
        }
        returns++;
        if (!ready) continue;
        int w = try_send(p);
        if (w > 0) {
            woken = now_ms() - t0;
            break;
        }
        again++;
    }
    say("result returns %d eagain %d", returns, again);
    check(mech != 3 || returns <= 20, "level-triggered EPOLLOUT on a full connection: %d returns (busy loop)", returns);
    check(woken >= 0, "the peer read %d KiB at 300 ms; no room seen within 5 s (waits returned %d times, %d EAGAINs)", PART >> 10, returns, again);
    say("result wake_ms %.1f", woken - 300);
    check(peer_reply(p).ok == 'k' && peer_reply(p).ok == 'k', "peer read failed");
    check(woken < 300 + 5000, "woken after %.0f ms", woken);
    /* Write a little more, then the peer reads and checks everything. */
    fill(p->fd, &p->up);
    peer_send(p, 'T', (int64_t)p->up.off);
    struct reply r = peer_reply(p);
    check(r.ok == 'k' && (uint64_t)r.val == p->up.hash, "peer: checksum of %llu bytes differs", (unsigned long long)p->up.off);
    say("ok %s filled=%zu wake_ms=%.1f waits=%d", g_case, filled, woken - 300, returns);
}


/* Review H1: a connection's number reused by another file in the same set. */
static void case_lt_reuse(struct peer *p) {
    int ep = lt_set(p);
    lt_mod(ep, p->fd, EPOLLIN | EPOLLOUT);
    unsigned ev = lt_wait(ep, 0);
    check(ev == EPOLLOUT, "MOD IN|OUT: %s", events_str(ev));
    int keep = dup(p->fd);
    check(keep >= 0, "dup");
    int efd = eventfd(0, EFD_NONBLOCK);
    check(efd >= 0, "eventfd");
    check(dup2(efd, p->fd) == p->fd, "dup2 the eventfd onto the connection's number");
    close(efd);
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = 0x2222};
    /* The kernel's registration of the connection stays (the file lives
     * under `keep`): ADD on the number is the eventfd's own. */
    check(epoll_ctl(ep, EPOLL_CTL_ADD, p->fd, &e) == 0, "EPOLL_CTL_ADD the eventfd");
    int quiet = 0;
    for (int i = 0; i < 200; i++) {
        struct epoll_event got[4];
        int n = epoll_wait(ep, got, 4, 0);
        check(n >= 0, "epoll_wait");
        for (int k = 0; k < n; k++)
            check(got[k].data.u64 != 0x2222, "the idle eventfd reported %s", events_str(got[k].events));
        quiet += n == 0 || got[0].data.u64 != 0x2222;
    }
    uint64_t one = 1;
    check(write(p->fd, &one, sizeof one) == sizeof one, "signal the eventfd");
    struct epoll_event got[4];
    int n = epoll_wait(ep, got, 4, 1000), seen = 0;
    for (int k = 0; k < n; k++)
        if (got[k].data.u64 == 0x2222) {
            check(got[k].events == EPOLLIN, "the eventfd: %s", events_str(got[k].events));
            seen = 1;
        }
    check(seen, "the signalled eventfd was not reported");
    check(dup2(keep, p->fd) == p->fd, "the connection back on its number");
    close(keep);
    close(ep);
    verify_up(p);
    /* Again with the connection closed for good (no dup left). */
    ep = lt_set(p);
    lt_mod(ep, p->fd, EPOLLIN | EPOLLOUT);
    ev = lt_wait(ep, 0);
    check(ev == EPOLLOUT, "MOD IN|OUT: %s", events_str(ev));
    efd = eventfd(0, EFD_NONBLOCK);
    check(efd >= 0, "eventfd");
    check(dup2(efd, p->fd) == p->fd, "dup2 an eventfd over the connection's number");
    close(efd);
    struct epoll_event e2 = {.events = EPOLLIN, .data.u64 = 0x3333};
    check(epoll_ctl(ep, EPOLL_CTL_ADD, p->fd, &e2) == 0, "EPOLL_CTL_ADD the eventfd");
    for (int i = 0; i < 200; i++) {
        struct epoll_event got2[4];
        int m = epoll_wait(ep, got2, 4, 0);
        check(m == 0, "a set holding only an idle eventfd reported %s (data %#llx)",
              events_str(got2[0].events), (unsigned long long)got2[0].data.u64);
    }
    check(write(p->fd, &one, sizeof one) == sizeof one, "signal the eventfd");
    n = epoll_wait(ep, got, 4, 1000);
    check(n == 1 && got[0].data.u64 == 0x3333 && got[0].events == EPOLLIN, "the signalled eventfd: %d events, %s",
          n, n > 0 ? events_str(got[0].events) : "-");
    close(ep);
    close(p->fd);
    p->fd = -1;
    say("ok %s quiet=%d", g_case, quiet);
}

/* Review H2: one slot, EPOLLOUT answered from the ring and another fd ready. */
static void case_lt_one_slot(struct peer *p) {
    int ep = lt_set(p);
    int efd = eventfd(1, EFD_NONBLOCK);
    check(efd >= 0, "eventfd");
    struct epoll_event e = {.events = EPOLLIN, .data.fd = efd};
    check(epoll_ctl(ep, EPOLL_CTL_ADD, efd, &e) == 0, "EPOLL_CTL_ADD the eventfd");
    lt_mod(ep, p->fd, EPOLLIN | EPOLLOUT);
    int conn = 0, other = 0;
    for (int i = 0; i < 20; i++) {
        struct epoll_event got;
        check(epoll_wait(ep, &got, 1, 1000) == 1, "maxevents 1: no event");
        if (got.data.fd == p->fd) conn++;
        else other++;
    }
    say("result one_slot conn %d eventfd %d", conn, other);
    check(conn >= 5 && other >= 5, "maxevents 1, 20 waits: connection %d, eventfd %d", conn, other);
    check(epoll_ctl(ep, EPOLL_CTL_DEL, efd, NULL) == 0, "EPOLL_CTL_DEL the eventfd");
    close(efd);
    /* Data queued while EPOLLOUT is wanted: one event with both. */
    struct reply w = peer_do(p, 'W', 100);
    unsigned ev = 0;
    for (int i = 0; i < 100 && ev != (EPOLLIN | EPOLLOUT); i++) {
        struct epoll_event got;
        int n = epoll_wait(ep, &got, 1, 100);
        ev = n == 1 ? got.events : 0;
    }
    check(ev == (EPOLLIN | EPOLLOUT), "maxevents 1 with data queued: %s", events_str(ev));
    char buf[100];
    size_t got = 0;
    while (got < sizeof buf) {
        ssize_t r = recv(p->fd, buf + got, sizeof buf - got, 0);
        check(r > 0 || (r < 0 && errno == EAGAIN), "recv");
        if (r > 0) got += (size_t)r;
    }
    uint64_t bad;
    check(stream_check(&p->down, buf, sizeof buf, &bad) == 0, "wrong byte at %llu", (unsigned long long)bad);
    expect_down_hash(p, w);
    close(ep);
    verify_up(p);
    say("ok %s conn=%d eventfd=%d", g_case, conn, other);
}

static void case_spin(struct peer *p) {
    size_t filled = fill(p->fd, &p->up);
    double t0 = now_ms();
    int returns = 0, wrote = 0;
    while (now_ms() - t0 < 200) {
        int left = (int)(200 - (now_ms() - t0));
        if (left <= 0) break;
        int rev = poll1(p->fd, POLLOUT, left);
        returns++;
        if (rev & POLLOUT) wrote += try_send(p);
    }
    say("result spins %d (poll returns in 200 ms, peer not reading; %d bytes written meanwhile)", returns, wrote);
    peer_send(p, 'T', (int64_t)p->up.off);
    struct reply r = peer_reply(p);
    check(r.ok == 'k' && (uint64_t)r.val == p->up.hash, "peer: checksum of %llu bytes differs", (unsigned long long)p->up.off);
    check(returns <= 20, "poll(POLLOUT) on a full connection returned %d times in 200 ms (busy loop)", returns);
    say("ok spin filled=%zu returns=%d", filled, returns);
}

int main(int argc, char **argv) {
    rd_init(argc, argv, 30);
    struct peer p = peer_open(PEER_CONNECTS);
    set_nonblock(p.fd, 1);
    checkpoint();
    if (!strcmp(g_case, "poll")) case_wait(&p, 0);
    else if (!strcmp(g_case, "epoll_out_et")) case_wait(&p, 1);
    else if (!strcmp(g_case, "epoll_inout_et")) case_wait(&p, 2);
    else if (!strcmp(g_case, "epoll_lt")) case_wait(&p, 3);
    else if (!strcmp(g_case, "epoll_lt_nested")) case_lt_other(&p, 0);
    else if (!strcmp(g_case, "epoll_lt_poll")) case_lt_other(&p, 1);
    else if (!strcmp(g_case, "epoll_lt_fork")) case_lt_other(&p, 2);
    else if (!strcmp(g_case, "epoll_lt_reuse")) case_lt_reuse(&p);
    else if (!strcmp(g_case, "epoll_lt_one_slot")) case_lt_one_slot(&p);
    else if (!strcmp(g_case, "spin")) case_spin(&p);
    else fail("unknown case");
    peer_end(&p);
    return 0;
}
