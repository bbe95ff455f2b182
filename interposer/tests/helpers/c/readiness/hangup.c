/* The peer goes away. CASE:
 *   close        the peer writes 1000 bytes and close()s: POLLIN and
 *                POLLRDHUP / EPOLLRDHUP; the data, then read() == 0
 *   shutwr       the peer writes 1000 bytes and shutdown(SHUT_WR)s: the
 *                data, then 0, and EPOLLRDHUP; we can still send to it
 *   kill         the peer writes 1000 bytes and is SIGKILLed: POLLIN or
 *                POLLHUP; the data, then 0 or ECONNRESET
 *   kill_unread  the same, with 5000 bytes from us unread by the peer
 *   epipe        the peer (the connecting side) close()s without having
 *                read anything; our sends (MSG_NOSIGNAL) fail with EPIPE
 *                within 10 tries; then POLLHUP or POLLERR; a send without
 *                MSG_NOSIGNAL raises SIGPIPE
 *   epipe_connector  the same with roles swapped: the peer accepted
 * Every observation is printed as "result KEY VALUE" (the test compares
 * them with a kernel TCP run); what a case requires is checked at the end,
 * all failures listed. */
#include "rd.h"

static char problems[400];

static void want(int cond, const char *what) {
    if (cond) return;
    say("result problem %s", what);
    if (strlen(problems) + strlen(what) + 3 < sizeof problems) {
        if (problems[0]) strcat(problems, "; ");
        strcat(problems, what);
    }
}

static int epoll_watch(int fd) {
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.fd = fd};
    check(ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) == 0, "epoll");
    return ep;
}

static unsigned ewait(int ep, int ms) {
    struct epoll_event e;
    int n = epoll_wait(ep, &e, 1, ms);
    check(n >= 0, "epoll_wait");
    return n ? e.events : 0;
}

/* Read the peer's `n` bytes, then what comes after them within 2 s:
 * "data+EOF", "data+ECONNRESET", ... Data verified. */
static const char *read_to_end(struct peer *p, size_t n) {
    static char out[64];
    if (recv_stream(p->fd, &p->down, n, 3000)) {
        snprintf(out, sizeof out, "short(%llu,%s)", (unsigned long long)p->down.off, errno ? ename(errno) : "EOF");
        return out;
    }
    char b;
    double end = now_ms() + 2000;
    for (;;) {
        ssize_t r = recv(p->fd, &b, 1, MSG_DONTWAIT);
        if (r == 0) return "data+EOF";
        if (r > 0) return "data+extra-bytes";
        if (errno != EAGAIN) {
            snprintf(out, sizeof out, "data+%s", ename(errno));
            return out;
        }
        if (now_ms() > end) return "data+nothing-for-2s";
        poll1(p->fd, POLLIN, 100);
    }
}

static void case_close(struct peer *p) {
    int ep = epoll_watch(p->fd);
    peer_do(p, 'W', 1000);
    peer_do(p, 'C', 0);
    int rev = poll1(p->fd, POLLIN | POLLRDHUP, 5000);
    say("result close-poll %s", events_str((unsigned)rev));
    unsigned ev = ewait(ep, 1000);
    say("result close-epoll %s", events_str(ev));
    want(rev & POLLIN, "close: no POLLIN");
    want(rev & POLLRDHUP, "close: no POLLRDHUP");
    want(ev & EPOLLRDHUP, "close: no EPOLLRDHUP");
    const char *end = read_to_end(p, 1000);
    say("result close-read %s", end);
    want(!strcmp(end, "data+EOF"), "close: not the data then EOF");
    char b;
    ssize_t r = recv(p->fd, &b, 1, 0);
    say("result close-read-again %s", r == 0 ? "EOF" : ename(errno));
    want(r == 0, "close: second read after EOF is not 0");
    rev = poll1(p->fd, POLLIN | POLLOUT | POLLRDHUP, 0);
    say("result close-poll-after-eof %s", events_str((unsigned)rev));
}

static void case_shutwr(struct peer *p) {
    int ep = epoll_watch(p->fd);
    peer_do(p, 'W', 1000);
    peer_do(p, 'H', 0);
    int rev = poll1(p->fd, POLLIN | POLLRDHUP, 5000);
    say("result shutwr-poll %s", events_str((unsigned)rev));
    unsigned ev = ewait(ep, 1000);
    say("result shutwr-epoll %s", events_str(ev));
    want(rev & POLLIN, "shutwr: no POLLIN");
    want(ev & EPOLLRDHUP, "shutwr: no EPOLLRDHUP");
    want(rev & POLLRDHUP, "shutwr: no POLLRDHUP");
    const char *end = read_to_end(p, 1000);
    say("result shutwr-read %s", end);
    want(!strcmp(end, "data+EOF"), "shutwr: not the data then EOF");
    rev = poll1(p->fd, POLLIN | POLLOUT | POLLRDHUP, 0);
    say("result shutwr-poll-after-eof %s", events_str((unsigned)rev));
    want(rev & POLLOUT, "shutwr: not writable after the peer's SHUT_WR");
    /* Half-closed: our direction still works. */
    send_stream(p->fd, &p->up, 200000);
    verify_up(p);
    say("result shutwr-our-direction ok");
}

static void case_kill(struct peer *p, int unread) {
    if (unread) send_stream(p->fd, &p->up, 5000);
    peer_do(p, 'W', 1000);
    kill(p->pid, SIGKILL);
    check(waitpid(p->pid, NULL, 0) == p->pid, "waitpid");
    g_peer_pid = 0;
    int rev = poll1(p->fd, POLLIN | POLLRDHUP, 5000);
    say("result kill-poll %s", events_str((unsigned)rev));
    want(rev & (POLLIN | POLLHUP), "kill: neither POLLIN nor POLLHUP within 5 s");
    const char *end = read_to_end(p, 1000);
    say("result kill-read %s", end);
    want(!strcmp(end, "data+EOF") || !strcmp(end, "data+ECONNRESET") || (unread && !strncmp(end, "short", 5)),
         "kill: not the data then EOF or ECONNRESET");
    rev = poll1(p->fd, POLLIN | POLLOUT | POLLRDHUP, 0);
    say("result kill-poll-after-read %s", events_str((unsigned)rev));
}

static volatile sig_atomic_t sigpipes;
static void on_sigpipe(int sig) {
    (void)sig;
    sigpipes++;
}

static void case_epipe(struct peer *p) {
    peer_do(p, 'C', 0);
    int rev = poll1(p->fd, POLLIN, 5000);
    want(rev & POLLIN, "epipe: no POLLIN after the peer closed");
    char b;
    want(recv(p->fd, &b, 1, 0) == 0, "epipe: read after the peer closed is not 0");
    char seq[128] = "";
    int got_epipe = 0;
    for (int i = 0; i < 10 && !got_epipe; i++) {
        char buf[100] = {0};
        ssize_t w = send(p->fd, buf, sizeof buf, MSG_NOSIGNAL);
        char one[24];
        snprintf(one, sizeof one, "%s%s", seq[0] ? "," : "", w >= 0 ? "100" : ename(errno));
        strcat(seq, one);
        got_epipe = w < 0 && errno == EPIPE;
        if (w < 0 && !got_epipe) break;
        sleep_ms(20);
    }
    say("result epipe-sends %s", seq);
    want(got_epipe, "epipe: no EPIPE within 10 sends");
    if (!got_epipe) {
        /* Where does it end? A blocking send of 3 MiB, bounded by SO_SNDTIMEO. */
        struct timeval tv = {2, 0};
        setsockopt(p->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        static char big[3 << 20];
        double t0 = now_ms();
        ssize_t w = send(p->fd, big, sizeof big, MSG_NOSIGNAL);
        say("result epipe-3MiB-send %s after %.0f ms", w >= 0 ? "returned-count" : ename(errno), now_ms() - t0);
        if (w >= 0) say("result epipe-3MiB-send-count %zd", w);
    }
    rev = poll1(p->fd, POLLIN | POLLOUT | POLLRDHUP, 0);
    say("result epipe-poll %s", events_str((unsigned)rev));
    want(rev & (POLLHUP | POLLERR), "epipe: neither POLLHUP nor POLLERR after EPIPE");
    int err = -1;
    socklen_t len = sizeof err;
    getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    say("result epipe-so_error %s", ename(err));
    signal(SIGPIPE, on_sigpipe);
    ssize_t w = send(p->fd, "x", 1, 0);
    say("result epipe-sigpipe send=%s signals=%d", w >= 0 ? "1" : ename(errno), (int)sigpipes);
    want(w < 0 && errno == EPIPE && sigpipes == 1, "epipe: a send without MSG_NOSIGNAL: not EPIPE with one SIGPIPE");
    signal(SIGPIPE, SIG_IGN);
}

int main(int argc, char **argv) {
    rd_init(argc, argv, 30);
    struct peer p = peer_open(strcmp(g_case, "epipe_connector") ? PEER_CONNECTS : PEER_LISTENS);
    checkpoint();
    if (!strcmp(g_case, "close")) case_close(&p);
    else if (!strcmp(g_case, "shutwr")) case_shutwr(&p);
    else if (!strcmp(g_case, "kill")) case_kill(&p, 0);
    else if (!strcmp(g_case, "kill_unread")) case_kill(&p, 1);
    else if (!strncmp(g_case, "epipe", 5)) case_epipe(&p);
    else fail("unknown case");
    if (g_peer_pid) peer_end(&p);
    check(!problems[0], "%s", problems);
    say("ok %s", g_case);
    return 0;
}
