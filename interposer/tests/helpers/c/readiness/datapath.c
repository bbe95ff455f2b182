/* Data paths into and out of a connection; the peer checks every byte.
 * CASE:
 *   sendfile  sendfile(2) of a 3 MiB file: 1 MiB with an offset pointer
 *             (the file position must not move), the rest from the file
 *             position
 *   splice    splice(2) file -> pipe -> connection, 3 MiB
 *   iovmax    writev and readv with IOV_MAX (1024) iovecs of random sizes
 *   cork      TCP_CORK, TCP_NODELAY and send(MSG_MORE) are accepted and
 *             the data arrives (after uncorking)
 * Prints "ok CASE ...". */
#include "rd.h"

#include <limits.h>
#include <sys/sendfile.h>

#define FILE_BYTES (3 << 20)

/* A temporary file holding the next FILE_BYTES bytes of our stream (the
 * stream is advanced: that is what the peer will check). */
static int stream_file(struct stream *s) {
    char path[] = "rd-file-XXXXXX";
    int f = mkstemp(path);
    check(f >= 0, "mkstemp in the working directory");
    unlink(path);
    static char buf[65536];
    for (size_t done = 0; done < FILE_BYTES; done += sizeof buf) {
        stream_gen(s, buf, sizeof buf);
        check(write(f, buf, sizeof buf) == (ssize_t)sizeof buf, "write file");
    }
    check(lseek(f, 0, SEEK_SET) == 0, "lseek");
    return f;
}

static void case_sendfile(struct peer *p) {
    int f = stream_file(&p->up);
    peer_send(p, 'T', FILE_BYTES); /* reads while we send */
    off_t off = 0;
    while (off < (1 << 20)) {
        ssize_t n = sendfile(p->fd, f, &off, (size_t)((1 << 20) - off));
        check(n > 0, "sendfile with offset at %lld", (long long)off);
    }
    check(lseek(f, 0, SEEK_CUR) == 0, "sendfile with an offset pointer moved the file position");
    check(lseek(f, 1 << 20, SEEK_SET) == 1 << 20, "lseek");
    size_t left = FILE_BYTES - (1 << 20);
    while (left) {
        ssize_t n = sendfile(p->fd, f, NULL, left);
        check(n > 0, "sendfile from the file position, %zu left", left);
        left -= (size_t)n;
    }
    check(lseek(f, 0, SEEK_CUR) == FILE_BYTES, "file position not advanced by sendfile");
    struct reply r = peer_reply(p);
    check(r.ok == 'k' && (uint64_t)r.val == p->up.hash, "peer: %s, checksum %s", r.ok == 'k' ? "read all" : ename(r.err),
          (uint64_t)r.val == p->up.hash ? "equal" : "differs");
    say("ok sendfile bytes=%d", FILE_BYTES);
}

static void case_splice(struct peer *p) {
    int f = stream_file(&p->up);
    int pp[2];
    check(pipe(pp) == 0, "pipe");
    peer_send(p, 'T', FILE_BYTES);
    loff_t off = 0;
    set_nonblock(p->fd, 1);
    double end = now_ms() + 3000;
    size_t sent = 0;
    int stalled = 0;
    while (sent < FILE_BYTES && !stalled) {
        ssize_t in = splice(f, &off, pp[1], NULL, 65536, SPLICE_F_MOVE);
        check(in > 0, "splice file -> pipe");
        ssize_t moved = 0;
        while (moved < in) {
            ssize_t n = splice(pp[0], NULL, p->fd, NULL, (size_t)(in - moved), SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n < 0 && errno == EAGAIN) {
                if (now_ms() > end) {
                    stalled = 1;
                    break;
                }
                poll1(p->fd, POLLOUT, 100);
                continue;
            }
            check(n > 0, "splice pipe -> connection after %zu bytes", sent + (size_t)moved);
            moved += n;
        }
        sent += (size_t)moved;
    }
    say("result spliced %zu%s", sent, stalled ? " then stalled (3 s deadline)" : "");
    struct reply r = peer_reply_within(p, 12000);
    say("result peer %s after %lld bytes", r.ok == 'k' ? "read-all" : r.err == -1 ? "EOF" : ename(r.err),
        (long long)(r.ok == 'k' ? FILE_BYTES : r.val));
    check(!stalled, "splice into the connection stalled after %zu of %d bytes", sent, FILE_BYTES);
    check(r.ok == 'k' && (uint64_t)r.val == p->up.hash, "peer: %s after %lld bytes; checksum %s",
          r.ok == 'k' ? "read all" : r.err == -1 ? "EOF" : ename(r.err), (long long)(r.ok == 'k' ? FILE_BYTES : r.val),
          (uint64_t)r.val == p->up.hash ? "equal" : "differs");
    say("ok splice bytes=%d", FILE_BYTES);
}

/* splice connection -> pipe (blocking), 3 MiB written by the peer; the
 * pipe's bytes are checked against the peer's stream. */
static void case_splice_out(struct peer *p) {
    int pp[2];
    check(pipe(pp) == 0, "pipe");
    peer_send(p, 'W', FILE_BYTES);
    static char buf[65536];
    size_t got = 0;
    while (got < FILE_BYTES) {
        ssize_t n = splice(p->fd, NULL, pp[1], NULL, 65536, SPLICE_F_MOVE);
        check(n > 0, "splice connection -> pipe after %zu bytes", got);
        ssize_t left = n;
        while (left > 0) {
            ssize_t r = read(pp[0], buf, (size_t)left);
            check(r > 0, "read pipe");
            uint64_t bad;
            check(stream_check(&p->down, buf, (size_t)r, &bad) == 0, "byte %llu differs", (unsigned long long)bad);
            left -= r;
        }
        got += (size_t)n;
    }
    expect_down_hash(p, peer_reply(p));
    say("ok splice-out bytes=%d", FILE_BYTES);
}

static uint64_t rng = 0x12345678;
static size_t rnd(size_t n) {
    rng = splitmix(rng);
    return (size_t)(rng % n);
}

static void case_iovmax(struct peer *p) {
    long iov_max = sysconf(_SC_IOV_MAX);
    check(iov_max == IOV_MAX && IOV_MAX == 1024, "IOV_MAX %ld", iov_max);
    static char data[1024 * 2048];
    static struct iovec iov[1025];
    for (int round = 0; round < 4; round++) {
        /* writev: 1024 slices (some empty) of one stream chunk. */
        size_t total = 0;
        for (int i = 0; i < 1024; i++) {
            size_t len = i % 97 == 5 ? 0 : rnd(round == 0 ? 64 : 2048);
            iov[i].iov_base = data + total;
            iov[i].iov_len = len;
            total += len;
        }
        stream_gen(&p->up, data, total);
        peer_send(p, 'T', (int64_t)p->up.off);
        size_t done = 0;
        int first = 1;
        struct iovec *v = iov;
        int cnt = 1024;
        while (done < total) {
            ssize_t n = writev(p->fd, v, cnt);
            check(n > 0, "writev of %d iovecs", cnt);
            if (first) say("result writev-first %zd of %zu", n, total);
            first = 0;
            done += (size_t)n;
            /* Skip what was written (on copies: iov is reused below). */
            while (cnt && (size_t)n >= v->iov_len) {
                n -= (ssize_t)v->iov_len;
                v++;
                cnt--;
            }
            if (cnt) {
                v->iov_base = (char *)v->iov_base + n;
                v->iov_len -= (size_t)n;
            }
        }
        struct reply r = peer_reply(p);
        check(r.ok == 'k' && (uint64_t)r.val == p->up.hash, "round %d: peer checksum after writev %s", round,
              r.ok == 'k' ? "differs" : ename(r.err));

        /* readv: the peer writes, we gather into 1024 slices. */
        size_t want = 0;
        for (int i = 0; i < 1024; i++) {
            size_t len = i % 89 == 3 ? 0 : rnd(round == 0 ? 64 : 2048);
            iov[i].iov_base = data + want;
            iov[i].iov_len = len;
            want += len;
        }
        memset(data, 0, want);
        peer_send(p, 'W', (int64_t)want); /* more than the ring: read meanwhile */
        size_t got = 0;
        v = iov;
        cnt = 1024;
        while (got < want) {
            check(poll1(p->fd, POLLIN, 5000) & POLLIN, "not readable, %zu of %zu", got, want);
            ssize_t n = readv(p->fd, v, cnt);
            check(n > 0, "readv into %d iovecs", cnt);
            got += (size_t)n;
            while (cnt && (size_t)n >= v->iov_len) {
                n -= (ssize_t)v->iov_len;
                v++;
                cnt--;
            }
            if (cnt) {
                v->iov_base = (char *)v->iov_base + n;
                v->iov_len -= (size_t)n;
            }
        }
        struct reply w = peer_reply(p);
        check(w.ok == 'k', "peer write failed");
        uint64_t bad;
        check(stream_check(&p->down, data, want, &bad) == 0, "round %d: readv: wrong byte at %llu", round,
              (unsigned long long)bad);
        expect_down_hash(p, w);
    }
    /* More than IOV_MAX: the kernel says EINVAL. */
    for (int i = 0; i < 1025; i++) {
        iov[i].iov_base = data;
        iov[i].iov_len = 1;
    }
    ssize_t n = writev(p->fd, iov, 1025);
    say("result writev-1025 %s", n < 0 ? ename(errno) : "accepted");
    if (n > 0) say("result writev-1025-bytes %zd", n); /* not checked by the peer: last write */
    say("ok iovmax rounds=4");
}

static void case_cork(struct peer *p) {
    int one = 1, zero = 0;
    check(setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0, "TCP_NODELAY");
    int v = -1;
    socklen_t len = sizeof v;
    check(getsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) == 0 && v == 1, "TCP_NODELAY reads back %d", v);
    check(setsockopt(p->fd, IPPROTO_TCP, TCP_CORK, &one, sizeof one) == 0, "TCP_CORK on");
    static char buf[10000];
    size_t total = 0;
    for (int i = 0; i < 20; i++) {
        size_t n = (size_t)(i * 487 % 9999) + 1;
        stream_gen(&p->up, buf, n);
        ssize_t w = send(p->fd, buf, n, MSG_MORE | MSG_NOSIGNAL);
        check(w == (ssize_t)n, "send(MSG_MORE) of %zu returned %zd", n, w);
        total += n;
    }
    check(setsockopt(p->fd, IPPROTO_TCP, TCP_CORK, &zero, sizeof zero) == 0, "TCP_CORK off");
    stream_gen(&p->up, buf, 1);
    check(send(p->fd, buf, 1, 0) == 1, "send");
    check(setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &zero, sizeof zero) == 0, "TCP_NODELAY off");
    stream_gen(&p->up, buf, 2);
    check(send(p->fd, buf, 2, MSG_MORE) == 2, "send(MSG_MORE) with TCP_NODELAY off");
    stream_gen(&p->up, buf, 3);
    check(send(p->fd, buf, 3, 0) == 3, "send");
    /* Everything arrives, within the peer's 10 s read timeout. */
    double t0 = now_ms();
    verify_up(p);
    say("result arrived-after-ms %.1f", now_ms() - t0);
    /* And the other direction, for completeness. */
    struct reply w = peer_do(p, 'W', 50000);
    check(recv_stream(p->fd, &p->down, 50000, 5000) == 0, "receiving");
    expect_down_hash(p, w);
    say("ok cork bytes=%zu", total + 6);
}

int main(int argc, char **argv) {
    rd_init(argc, argv, 30);
    struct peer p = peer_open(PEER_CONNECTS);
    checkpoint();
    if (!strcmp(g_case, "sendfile")) case_sendfile(&p);
    else if (!strcmp(g_case, "splice")) case_splice(&p);
    else if (!strcmp(g_case, "splice-out")) case_splice_out(&p);
    else if (!strcmp(g_case, "iovmax")) case_iovmax(&p);
    else if (!strcmp(g_case, "cork")) case_cork(&p);
    else fail("unknown case");
    peer_end(&p);
    return 0;
}
