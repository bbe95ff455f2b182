/* Non-blocking connect (socket(SOCK_NONBLOCK)). CASE:
 *   ok       a peer listens: connect returns 0 or EINPROGRESS; then POLLOUT,
 *            SO_ERROR 0, the fd still non-blocking, data flows both ways
 *   refused  nothing listens on the port: ECONNREFUSED, from connect itself
 *            or as SO_ERROR after POLLOUT/POLLERR; a blocking connect too
 * Prints "result connect ...", "ok CASE". */
#include "rd.h"

static int nb_connect(const struct sockaddr_in *a, const char **how) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    check(s >= 0, "socket");
    int r = connect(s, (const struct sockaddr *)a, sizeof *a);
    *how = r == 0 ? "0" : ename(errno);
    if (r < 0) check(errno == EINPROGRESS || errno == ECONNREFUSED, "connect: want 0, EINPROGRESS or ECONNREFUSED");
    return s;
}

static int so_error(int fd) {
    int err = -1;
    socklen_t len = sizeof err;
    check(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0, "getsockopt SO_ERROR");
    return err;
}

static void case_ok(void) {
    struct peer p = peer_start(PEER_LISTENS, peer_loop);
    const char *how;
    p.fd = nb_connect(&p.addr, &how);
    say("result connect %s", how);
    check(strcmp(how, "ECONNREFUSED"), "refused with a listener there");
    int rev = poll1(p.fd, POLLOUT, 5000);
    say("result poll %s", events_str((unsigned)rev));
    check(rev == POLLOUT, "after connect: revents %s, want POLLOUT", events_str((unsigned)rev));
    int err = so_error(p.fd);
    check(err == 0, "SO_ERROR %s", ename(err));
    check(fcntl(p.fd, F_GETFL) & O_NONBLOCK, "no longer O_NONBLOCK after connect");
    struct sockaddr_in peer_addr;
    socklen_t len = sizeof peer_addr;
    check(getpeername(p.fd, (struct sockaddr *)&peer_addr, &len) == 0, "getpeername");
    check(peer_addr.sin_port == p.addr.sin_port && peer_addr.sin_addr.s_addr == p.addr.sin_addr.s_addr, "getpeername: wrong address");
    char b;
    check(recv(p.fd, &b, 1, 0) < 0 && errno == EAGAIN, "recv on the fresh non-blocking connection: want EAGAIN");
    checkpoint();
    send_stream(p.fd, &p.up, 300000);
    verify_up(&p);
    struct reply w = peer_do(&p, 'W', 300000);
    check(recv_stream(p.fd, &p.down, 300000, 5000) == 0, "receiving");
    expect_down_hash(&p, w);
    peer_end(&p);
    say("ok ok");
}

static void case_refused(void) {
    struct sockaddr_in a = unused_addr();
    const char *how;
    int s = nb_connect(&a, &how);
    say("result connect %s", how);
    if (!strcmp(how, "EINPROGRESS")) {
        int rev = poll1(s, POLLOUT, 5000);
        say("result poll %s", events_str((unsigned)rev));
        check(rev & (POLLOUT | POLLERR), "no POLLOUT/POLLERR within 5 s");
        int err = so_error(s);
        say("result so_error %s", ename(err));
        check(err == ECONNREFUSED, "SO_ERROR %s, want ECONNREFUSED", ename(err));
    } else {
        check(!strcmp(how, "ECONNREFUSED"), "connected with no listener");
    }
    close(s);
    s = socket(AF_INET, SOCK_STREAM, 0);
    int r = connect(s, (const struct sockaddr *)&a, sizeof a);
    say("result blocking-connect %s", r == 0 ? "0" : ename(errno));
    check(r < 0 && errno == ECONNREFUSED, "blocking connect: want ECONNREFUSED");
    close(s);
    say("ok refused");
}

int main(int argc, char **argv) {
    rd_init(argc, argv, 30);
    if (!strcmp(g_case, "ok")) case_ok();
    else if (!strcmp(g_case, "refused")) case_refused();
    else fail("unknown case");
    return 0;
}
