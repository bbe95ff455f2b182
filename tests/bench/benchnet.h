/*
 * benchnet.h: what sockbench.c and kvbench.c share — the address options
 * (--tcp ADDR, --unix PATH, --port P), a monotonic clock, TCP_NODELAY and
 * the listener. Header-only (static): each program defines die() and
 * fail() itself (its own message prefix) before including this.
 */
#ifndef BENCHNET_H
#define BENCHNET_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char *tcp_addr = "127.0.0.1";
static const char *unix_path;
static int port;

__attribute__((noreturn)) static void die(const char *fmt, ...);
__attribute__((noreturn)) static void fail(const char *fmt, ...);

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void nodelay(int fd)
{
    int one = 1;
    if (!unix_path && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        die("setsockopt(TCP_NODELAY)");
}

/* Fills *ss with the address to use; returns its length. */
static socklen_t address(struct sockaddr_storage *ss, int p)
{
    memset(ss, 0, sizeof *ss);
    if (unix_path) {
        struct sockaddr_un *un = (struct sockaddr_un *)ss;
        un->sun_family = AF_UNIX;
        if (strlen(unix_path) >= sizeof un->sun_path)
            fail("--unix path too long");
        strcpy(un->sun_path, unix_path);
        return sizeof *un;
    }
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    in->sin_family = AF_INET;
    in->sin_port = htons(p);
    if (inet_pton(AF_INET, tcp_addr, &in->sin_addr) != 1)
        fail("bad --tcp address %s", tcp_addr);
    return sizeof *in;
}

/* Server side: a listener with `backlog`; returns its fd and the port it got. */
static int listener(int backlog, int *got_port)
{
    struct sockaddr_storage ss;
    socklen_t len = address(&ss, port);
    int fd = socket(ss.ss_family, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    int one = 1;
    if (!unix_path && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        die("setsockopt(SO_REUSEADDR)");
    if (unix_path)
        unlink(unix_path);
    if (bind(fd, (struct sockaddr *)&ss, len) < 0)
        die("bind");
    if (listen(fd, backlog) < 0)
        die("listen");
    *got_port = 0;
    if (!unix_path) {
        struct sockaddr_in in;
        socklen_t il = sizeof in;
        if (getsockname(fd, (struct sockaddr *)&in, &il) < 0)
            die("getsockname");
        *got_port = ntohs(in.sin_port);
        if (*got_port == 0)
            fail("getsockname on the listener returned port 0");
    }
    return fd;
}

#endif
