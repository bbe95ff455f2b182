/* Socket options of TCP sockets in every state, dumped for comparison
 * (interposer/tests/options.rs runs it on kernel TCP and on the emulated
 * network and compares line by line).
 *
 *   sockopts HOST      dump every option getsockopt accepts, at the levels
 *                      SOL_SOCKET, IPPROTO_TCP, IPPROTO_IP, IPPROTO_IPV6
 *                      (names scanned numerically) and a few other levels,
 *                      with buffers of 512, 0, 1 and 3 bytes and a negative
 *                      length; for a bound socket, a listener, both ends of
 *                      a connection, the same after a list of setsockopt
 *                      calls (whose results are printed too), an accepted
 *                      socket of a listener that had them set, and the
 *                      TCP_INFO state after each kind of shutdown.
 *
 * Lines: "STATE LEVEL NAME PROBE rc errno len HEX" and
 * "set STATE LEVEL NAME TAG rc errno". Exits 0 unless the setup failed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int family;
static struct sockaddr_storage host;
static socklen_t hostlen;

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void set_port(struct sockaddr_storage *a, int port) {
    if (a->ss_family == AF_INET)
        ((struct sockaddr_in *)a)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)a)->sin6_port = htons(port);
}

static int bound(void) {
    int s = socket(family, SOCK_STREAM, 0);
    if (s < 0)
        die("socket");
    struct sockaddr_storage a = host;
    set_port(&a, 0);
    if (bind(s, (struct sockaddr *)&a, hostlen) < 0)
        die("bind");
    return s;
}

static int listener(void) {
    int s = bound();
    if (listen(s, 8) < 0)
        die("listen");
    return s;
}

static void connect_to(int l, int *c, int *a, int with_byte) {
    struct sockaddr_storage name;
    socklen_t n = sizeof name;
    if (getsockname(l, (struct sockaddr *)&name, &n) < 0)
        die("getsockname");
    *c = socket(family, SOCK_STREAM, 0);
    if (*c < 0)
        die("socket");
    if (connect(*c, (struct sockaddr *)&name, n) < 0)
        die("connect");
    /* (A listener with TCP_DEFER_ACCEPT hands over a connection with data.) */
    if (with_byte && write(*c, "x", 1) != 1)
        die("write");
    *a = accept(l, NULL, NULL);
    if (*a < 0)
        die("accept");
    char x;
    if (with_byte && read(*a, &x, 1) != 1)
        die("read");
}

static void probe(const char *state, int fd, int level, int name, const char *tag, int room) {
    unsigned char buf[512];
    memset(buf, 0xa5, sizeof buf);
    socklen_t len = (socklen_t)room;
    errno = 0;
    int rc = getsockopt(fd, level, name, buf, &len);
    int err = rc ? errno : 0;
    printf("%s %d %d %s %d %d %d ", state, level, name, tag, rc, err, (int)len);
    int shown = rc == 0 && (int)len > 0 ? (int)len : 0;
    if (shown > (int)sizeof buf)
        shown = sizeof buf;
    for (int i = 0; i < shown; i++)
        printf("%02x", buf[i]);
    /* bytes written past the length reported */
    int past = 0;
    int limit = room > 0 && room < (int)sizeof buf ? room : 0;
    for (int i = shown; i < limit; i++)
        past |= buf[i] != 0xa5;
    printf("%s\n", past ? " past" : "");
}

struct range {
    int level, lo, hi;
};

static const struct range ranges[] = {
    {SOL_SOCKET, 0, 80},    {IPPROTO_TCP, 0, 45}, {IPPROTO_IP, 0, 60},
    {IPPROTO_IPV6, 0, 80},  {IPPROTO_UDP, 1, 2},  {255 /* SOL_RAW */, 1, 2},
    {282 /* SOL_TLS */, 1, 2}, {284 /* SOL_MPTCP */, 1, 2}, {999, 1, 2},
};

static void dump(const char *state, int fd) {
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        for (int name = ranges[r].lo; name <= ranges[r].hi; name++) {
            int level = ranges[r].level;
            probe(state, fd, level, name, "512", 512);
            probe(state, fd, level, name, "0", 0);
            probe(state, fd, level, name, "1", 1);
            probe(state, fd, level, name, "3", 3);
            probe(state, fd, level, name, "neg", -1);
        }
    }
    fflush(stdout);
}

struct setting {
    int level, name;
    const char *tag;
    int len;
    union {
        int i;
        struct linger l;
        struct timeval tv;
        char s[16];
    } v;
};

#define INT(lv, nm, val) {lv, nm, #nm "=" #val, sizeof(int), {.i = val}}
#define SHORT(lv, nm, val) {lv, nm, #nm "=" #val "/2", 2, {.i = val}}

static const struct setting common[] = {
    INT(SOL_SOCKET, SO_RCVBUF, 100000),
    INT(SOL_SOCKET, SO_SNDBUF, 1000),
    SHORT(SOL_SOCKET, SO_SNDBUF, 1),
    INT(SOL_SOCKET, SO_RCVLOWAT, 10),
    INT(SOL_SOCKET, SO_SNDLOWAT, 10),
    INT(SOL_SOCKET, SO_KEEPALIVE, 5),
    INT(SOL_SOCKET, SO_REUSEADDR, 7),
    INT(SOL_SOCKET, SO_REUSEPORT, 1),
    {SOL_SOCKET, SO_LINGER, "SO_LINGER={1,5}", sizeof(struct linger), {.l = {1, 5}}},
    {SOL_SOCKET, SO_LINGER, "SO_LINGER/4", 4, {.l = {1, 5}}},
    {SOL_SOCKET, SO_RCVTIMEO, "SO_RCVTIMEO={0,1}", sizeof(struct timeval), {.tv = {0, 1}}},
    {SOL_SOCKET, SO_SNDTIMEO, "SO_SNDTIMEO={2,5}", sizeof(struct timeval), {.tv = {2, 5}}},
    {SOL_SOCKET, SO_SNDTIMEO, "SO_SNDTIMEO={0,2000000}", sizeof(struct timeval), {.tv = {0, 2000000}}},
    {SOL_SOCKET, SO_RCVTIMEO, "SO_RCVTIMEO/8", 8, {.tv = {3, 0}}},
    INT(SOL_SOCKET, SO_PRIORITY, 3),
    INT(SOL_SOCKET, SO_MARK, 5),
    INT(SOL_SOCKET, SO_OOBINLINE, 1),
    INT(SOL_SOCKET, SO_DONTROUTE, 1),
    INT(SOL_SOCKET, SO_BROADCAST, 1),
    {SOL_SOCKET, SO_BINDTODEVICE, "SO_BINDTODEVICE=nosuchdev0", 11, {.s = "nosuchdev0"}},
    INT(SOL_SOCKET, SO_TIMESTAMP, 1),
    INT(SOL_SOCKET, SO_BUSY_POLL, 50),
    INT(SOL_SOCKET, SO_PEEK_OFF, 5),
    INT(SOL_SOCKET, SO_ZEROCOPY, 1),
    INT(SOL_SOCKET, SO_INCOMING_CPU, 1),
    INT(SOL_SOCKET, SO_TYPE, 1),
    INT(SOL_SOCKET, SO_PASSCRED, 1),
    INT(SOL_SOCKET, SO_MAX_PACING_RATE, 1000000),
    INT(IPPROTO_TCP, TCP_NODELAY, 5),
    SHORT(IPPROTO_TCP, TCP_NODELAY, 1),
    INT(IPPROTO_TCP, TCP_CORK, 1),
    INT(IPPROTO_TCP, TCP_CORK, 0),
    INT(IPPROTO_TCP, TCP_MAXSEG, 10),
    INT(IPPROTO_TCP, TCP_KEEPIDLE, 30),
    INT(IPPROTO_TCP, TCP_KEEPIDLE, 0),
    INT(IPPROTO_TCP, TCP_KEEPIDLE, 40000),
    INT(IPPROTO_TCP, TCP_KEEPINTVL, 7),
    INT(IPPROTO_TCP, TCP_KEEPCNT, 200),
    INT(IPPROTO_TCP, TCP_KEEPCNT, 4),
    INT(IPPROTO_TCP, TCP_SYNCNT, 3),
    INT(IPPROTO_TCP, TCP_LINGER2, 30),
    INT(IPPROTO_TCP, TCP_DEFER_ACCEPT, 5),
    INT(IPPROTO_TCP, TCP_WINDOW_CLAMP, 100000),
    INT(IPPROTO_TCP, TCP_QUICKACK, 0),
    {IPPROTO_TCP, TCP_CONGESTION, "TCP_CONGESTION=nosuch", 6, {.s = "nosuch"}},
    {IPPROTO_TCP, TCP_CONGESTION, "TCP_CONGESTION=reno", 4, {.s = "reno"}},
    INT(IPPROTO_TCP, TCP_USER_TIMEOUT, 5000),
    INT(IPPROTO_TCP, TCP_USER_TIMEOUT, -1),
    INT(IPPROTO_TCP, TCP_NOTSENT_LOWAT, 16384),
    INT(IPPROTO_TCP, TCP_FASTOPEN_CONNECT, 1),
    {IPPROTO_TCP, TCP_ULP, "TCP_ULP=tls", 3, {.s = "tls"}},
    INT(IPPROTO_TCP, TCP_INQ, 1),
    INT(IPPROTO_TCP, TCP_TX_DELAY, 10),
    INT(IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS, 1),
    INT(IPPROTO_TCP, TCP_SAVE_SYN, 1),
    INT(IPPROTO_TCP, TCP_INFO, 1),
    INT(IPPROTO_TCP, 99, 1),
    INT(SOL_SOCKET, 99, 1),
    INT(999, 1, 1),
};

static const struct setting v4[] = {
    INT(IPPROTO_IP, IP_TOS, 0xff),
    INT(IPPROTO_IP, IP_TTL, 5),
    INT(IPPROTO_IP, IP_TTL, 0),
    INT(IPPROTO_IP, IP_TTL, 300),
    INT(IPPROTO_IP, IP_RECVERR, 1),
    INT(IPPROTO_IP, IP_MTU_DISCOVER, 0),
    INT(IPPROTO_IP, IP_MTU_DISCOVER, 10),
    INT(IPPROTO_IP, IP_FREEBIND, 1),
    INT(IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1),
    INT(IPPROTO_IP, IP_PKTINFO, 1),
    INT(IPPROTO_IP, IP_MINTTL, 3),
    INT(IPPROTO_IP, IP_MULTICAST_TTL, 5),
    INT(IPPROTO_IP, 99, 1),
};

static const struct setting v6[] = {
    INT(IPPROTO_IPV6, IPV6_V6ONLY, 1),
    INT(IPPROTO_IPV6, IPV6_TCLASS, 0xff),
    INT(IPPROTO_IPV6, IPV6_UNICAST_HOPS, 5),
    INT(IPPROTO_IPV6, IPV6_UNICAST_HOPS, 300),
    INT(IPPROTO_IPV6, IPV6_RECVERR, 1),
    INT(IPPROTO_IPV6, IPV6_MTU_DISCOVER, 2),
    INT(IPPROTO_IPV6, IPV6_DONTFRAG, 1),
    INT(IPPROTO_IPV6, IPV6_AUTOFLOWLABEL, 0),
    INT(IPPROTO_IPV6, IPV6_RECVPKTINFO, 1),
    INT(IPPROTO_IP, IP_TOS, 0x10),
    INT(IPPROTO_IPV6, 99, 1),
};

static void apply_list(const char *state, int fd, const struct setting *list, size_t n) {
    for (size_t i = 0; i < n; i++) {
        errno = 0;
        int rc = setsockopt(fd, list[i].level, list[i].name, &list[i].v, list[i].len);
        printf("set %s %d %d %s %d %d\n", state, list[i].level, list[i].name, list[i].tag, rc,
               rc ? errno : 0);
    }
}

static void apply(const char *state, int fd) {
    apply_list(state, fd, common, sizeof common / sizeof common[0]);
    if (family == AF_INET)
        apply_list(state, fd, v4, sizeof v4 / sizeof v4[0]);
    else
        apply_list(state, fd, v6, sizeof v6 / sizeof v6[0]);
    fflush(stdout);
}

/* Only TCP_INFO's state byte (the rest moves with time and traffic). */
static void state_of(const char *state, int fd) {
    unsigned char info[512];
    socklen_t len = sizeof info;
    int rc = getsockopt(fd, IPPROTO_TCP, TCP_INFO, info, &len);
    printf("%s %d %d state %d %d %d %02x\n", state, IPPROTO_TCP, TCP_INFO, rc, rc ? errno : 0,
           (int)len, rc == 0 ? info[0] : 0);
}

/* Writes n bytes on `from` and reads them all on `to`. */
static void move(int from, int to, char *buf, int n) {
    int sent = 0, got = 0;
    while (got < n) {
        if (sent < n) {
            int k = send(from, buf + sent, n - sent > 16384 ? 16384 : n - sent, MSG_DONTWAIT);
            if (k > 0)
                sent += k;
        }
        char in[16384];
        int k = recv(to, in, sizeof in, MSG_DONTWAIT);
        if (k > 0)
            got += k;
        else if (k == 0)
            die("early EOF");
    }
}

/* TCP_INFO's counters: state, retransmits, cwnd, unacked, bytes acked,
 * received and sent, notsent. */
static void counters(const char *state, int fd) {
    unsigned char info[512];
    socklen_t len = sizeof info;
    memset(info, 0, sizeof info);
    int rc = getsockopt(fd, IPPROTO_TCP, TCP_INFO, info, &len);
    /* offsets in linux/tcp.h's struct tcp_info (glibc's is older) */
    unsigned u32(int at) { unsigned v; memcpy(&v, info + at, 4); return v; }
    unsigned long long u64(int at) { unsigned long long v; memcpy(&v, info + at, 8); return v; }
    printf("%s rc=%d state=%u total_retrans=%u cwnd=%u unacked=%u bytes_acked=%llu "
           "bytes_received=%llu bytes_sent=%llu notsent=%u\n",
           state, rc, info[0], u32(100), u32(80), u32(24), u64(120), u64(128), u64(200),
           u32(144));
}

static void drain_eof(int fd) {
    char buf[256];
    while (read(fd, buf, sizeof buf) > 0)
        ;
}

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    memset(&host, 0, sizeof host);
    struct sockaddr_in *h4 = (struct sockaddr_in *)&host;
    struct sockaddr_in6 *h6 = (struct sockaddr_in6 *)&host;
    if (inet_pton(AF_INET, argv[1], &h4->sin_addr) == 1) {
        family = h4->sin_family = AF_INET;
        hostlen = sizeof *h4;
    } else if (inet_pton(AF_INET6, argv[1], &h6->sin6_addr) == 1) {
        family = h6->sin6_family = AF_INET6;
        hostlen = sizeof *h6;
    } else {
        return 2;
    }
    setvbuf(stdout, NULL, _IOFBF, 1 << 20);

    int b = bound();
    dump("bound", b);
    int l = listener();
    dump("listen", l);
    int c, a;
    connect_to(l, &c, &a, 0);
    dump("conn", c);
    dump("acc", a);

    /* Options set, then read back. */
    int b2 = bound();
    apply("bound", b2);
    dump("bound+set", b2);
    apply("conn", c);
    dump("conn+set", c);
    int l2 = listener();
    apply("listen", l2);
    dump("listen+set", l2);
    int c2, a2;
    connect_to(l2, &c2, &a2, 1);
    dump("inherited", a2);

    /* States after shutdowns. */
    int c3, a3;
    connect_to(l, &c3, &a3, 0);
    state_of("est", c3);
    shutdown(c3, SHUT_WR);
    drain_eof(a3);
    usleep(20000);
    state_of("shutwr-self", c3);
    state_of("shutwr-peer", a3);
    shutdown(a3, SHUT_WR);
    drain_eof(c3);
    usleep(20000);
    state_of("both-first", c3);
    state_of("both-second", a3);
    int c4, a4;
    connect_to(l, &c4, &a4, 0);
    shutdown(c4, SHUT_RD);
    state_of("shutrd", c4);
    close(a4);
    drain_eof(c4);
    usleep(20000);
    state_of("peer-closed", c4);

    /* Byte counters after 100000 bytes one way and 70000 the other, all
     * read. */
    int c5, a5;
    connect_to(l, &c5, &a5, 0);
    static char big[100000];
    memset(big, 'y', sizeof big);
    move(c5, a5, big, 100000);
    move(a5, c5, big, 70000);
    usleep(50000);
    counters("counters-conn", c5);
    counters("counters-acc", a5);
    fflush(stdout);
    return 0;
}
