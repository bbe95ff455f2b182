/*
 * delayline: a user-space wire with a fixed one-way delay, for benchmarks
 * over a link with a real round-trip time on a kernel without qdiscs (no
 * sch_netem here: "Specified qdisc kind is unknown").
 *
 *   delayline IF1 IF2 DELAY_US [QUEUE_FRAMES]
 *
 * Runs in a namespace W holding IF1 and IF2 (veth ends with no addresses,
 * no forwarding). Every frame received on one is sent on the other
 * DELAY_US microseconds after it arrived (ARP included: the two hosts stay
 * on one subnet), in arrival order: one timestamped FIFO per direction, a
 * timerfd for the head's release. A direction holding QUEUE_FRAMES
 * (default 8192) drops the next frame (a full bottleneck buffer). The
 * hosts' ends must send real MTU frames with checksums (ethtool -K tx off
 * tso off gso off): frames are copied as they are, larger ones dropped.
 *
 * Prints "ready" on stdout once both sockets are bound; on SIGTERM/SIGINT
 * prints one JSON line of counts (forwarded, queue drops, send errors,
 * kernel receive drops, frames over the slot size) and exits.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define SLOT 2048 /* an MTU-1500 frame is 1514 bytes */
#define BATCH 64

struct dir {
    int in, out;        /* packet sockets: receive on in, send on out */
    uint64_t *due;      /* release time of each slot, ns */
    uint16_t *len;
    unsigned char *buf; /* cap * SLOT */
    unsigned cap, head, count;
    unsigned long long fwd, qdrops, senderr, oversize;
};

static volatile sig_atomic_t stop;
static void on_signal(int s) { (void)s; stop = 1; }

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + t.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "delayline: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int packet_socket(const char *ifname)
{
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
    if (fd < 0)
        die("socket(AF_PACKET)");
    unsigned idx = if_nametoindex(ifname);
    if (!idx)
        die(ifname);
    /* Frames this socket sends on the device are not received back. */
    int one = 1;
    if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) < 0)
        die("PACKET_IGNORE_OUTGOING");
    int rcv = 16 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof rcv) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    int snd = 4 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &snd, sizeof snd) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, sizeof snd);
    struct sockaddr_ll sll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
                              .sll_ifindex = (int)idx};
    if (bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0)
        die("bind");
    /* Frames for the far host's MAC are not this device's: take them all. */
    struct packet_mreq mr = {.mr_ifindex = (int)idx, .mr_type = PACKET_MR_PROMISC};
    if (setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) < 0)
        die("PACKET_MR_PROMISC");
    return fd;
}

static void dir_init(struct dir *d, int in, int out, unsigned cap)
{
    memset(d, 0, sizeof *d);
    d->in = in;
    d->out = out;
    d->cap = cap;
    d->due = calloc(cap, sizeof *d->due);
    d->len = calloc(cap, sizeof *d->len);
    d->buf = malloc((size_t)cap * SLOT);
    if (!d->due || !d->len || !d->buf)
        die("malloc");
}

/* Reads every frame waiting on d->in into the FIFO, stamped now + delay. */
static void dir_take(struct dir *d, uint64_t delay_ns)
{
    static unsigned char scratch[65536];
    for (;;) {
        struct mmsghdr m[BATCH];
        struct iovec iov[BATCH];
        struct sockaddr_ll from[BATCH];
        unsigned slots[BATCH];
        unsigned n = 0;
        for (; n < BATCH; n++) {
            unsigned s = (d->head + d->count + n) % d->cap;
            int room = d->count + n < d->cap;
            slots[n] = room ? s : d->cap;
            iov[n].iov_base = room ? d->buf + (size_t)s * SLOT : scratch;
            iov[n].iov_len = room ? SLOT : sizeof scratch;
            memset(&m[n], 0, sizeof m[n]);
            m[n].msg_hdr.msg_iov = &iov[n];
            m[n].msg_hdr.msg_iovlen = 1;
            m[n].msg_hdr.msg_name = &from[n];
            m[n].msg_hdr.msg_namelen = sizeof from[n];
        }
        int got = recvmmsg(d->in, m, BATCH, MSG_DONTWAIT | MSG_TRUNC, NULL);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                die("recvmmsg");
            return;
        }
        uint64_t due = now_ns() + delay_ns;
        for (int i = 0; i < got; i++) {
            if (from[i].sll_pkttype == PACKET_OUTGOING)
                continue;
            /* Kept frames fill the FIFO in order: a skipped or dropped one
             * leaves the next kept one's slot where this one's was meant. */
            if (d->count >= d->cap || slots[i] == d->cap) {
                d->qdrops++;
                continue;
            }
            unsigned s = (d->head + d->count) % d->cap;
            if (m[i].msg_len > SLOT) {
                d->oversize++;
                continue;
            }
            if (s != slots[i])
                memmove(d->buf + (size_t)s * SLOT, iov[i].iov_base, m[i].msg_len);
            d->due[s] = due;
            d->len[s] = (uint16_t)m[i].msg_len;
            d->count++;
        }
        if (got < BATCH)
            return;
    }
}

/* Sends every frame whose time has come; the next release time or 0. */
static uint64_t dir_release(struct dir *d, uint64_t now)
{
    while (d->count && d->due[d->head] <= now) {
        unsigned s = d->head;
        if (send(d->out, d->buf + (size_t)s * SLOT, d->len[s], 0) < 0) {
            if (errno == EINTR)
                continue;
            /* ENOBUFS/EAGAIN: the far end's backlog is full; a lost frame,
             * as on a wire. */
            d->senderr++;
        } else {
            d->fwd++;
        }
        d->head = (d->head + 1) % d->cap;
        d->count--;
    }
    return d->count ? d->due[d->head] : 0;
}

static unsigned long long kernel_drops(int fd)
{
    struct tpacket_stats st;
    socklen_t l = sizeof st;
    if (getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &st, &l) < 0)
        return 0;
    return st.tp_drops;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: delayline IF1 IF2 DELAY_US [QUEUE_FRAMES]\n");
        return 2;
    }
    uint64_t delay_ns = (uint64_t)(strtod(argv[3], NULL) * 1000.0);
    unsigned cap = argc > 4 ? (unsigned)strtoul(argv[4], NULL, 10) : 8192;
    if (cap < 1)
        cap = 1;
    int a = packet_socket(argv[1]), b = packet_socket(argv[2]);
    struct dir d[2];
    dir_init(&d[0], a, b, cap);
    dir_init(&d[1], b, a, cap);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0)
        die("timerfd_create");
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    kernel_drops(a); /* the counters reset on each read: from here on */
    kernel_drops(b);
    printf("ready\n");
    fflush(stdout);

    while (!stop) {
        uint64_t now = now_ns(), next = 0;
        for (int i = 0; i < 2; i++) {
            uint64_t t = dir_release(&d[i], now);
            if (t && (!next || t < next))
                next = t;
        }
        struct itimerspec its = {0};
        if (next) {
            its.it_value.tv_sec = next / 1000000000ull;
            its.it_value.tv_nsec = next % 1000000000ull;
        }
        if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
            die("timerfd_settime");
        struct pollfd p[3] = {{a, POLLIN, 0}, {b, POLLIN, 0}, {tfd, POLLIN, 0}};
        if (poll(p, 3, -1) < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        if (p[2].revents & POLLIN) {
            uint64_t x;
            if (read(tfd, &x, sizeof x) < 0 && errno != EAGAIN)
                die("read timerfd");
        }
        if (p[0].revents & POLLIN)
            dir_take(&d[0], delay_ns);
        if (p[1].revents & POLLIN)
            dir_take(&d[1], delay_ns);
    }
    unsigned long long kdrops = kernel_drops(a) + kernel_drops(b);
    printf("{\"forwarded\":%llu,\"queue_drops\":%llu,\"send_errors\":%llu,"
           "\"kernel_drops\":%llu,\"oversize\":%llu}\n",
           d[0].fwd + d[1].fwd, d[0].qdrops + d[1].qdrops, d[0].senderr + d[1].senderr, kdrops,
           d[0].oversize + d[1].oversize);
    return 0;
}
