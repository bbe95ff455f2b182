/* Write readiness on a full connection. We (non-blocking) write until
 * EAGAIN; the peer, 300 ms later, reads 128 KiB (not everything) and stops
 * reading. CASE says how we wait for room:
 *   poll          poll(POLLOUT), level-triggered
 *   epoll_out_et  epoll EPOLLOUT|EPOLLET (EPOLLOUT alone)
 *   epoll_inout_et  epoll EPOLLIN|EPOLLOUT|EPOLLET (as nginx)
 * Each must see room and write more within 5 s of the peer's read. Then
 * the peer reads everything and checks it.
 *   spin          the peer does not read: count how often poll(POLLOUT)
 *                 returns (each followed by a send that says EAGAIN) in
 *                 200 ms; a waiting writer should return about once.
 * Prints "result wake_ms X", "result spins N", "ok CASE ...". */
#include "rd.h"

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

static void case_wait(struct peer *p, int mech) {
    int ep = -1;
    if (mech) {
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
    else if (!strcmp(g_case, "spin")) case_spin(&p);
    else fail("unknown case");
    peer_end(&p);
    return 0;
}
