/*
 * dgrambench: the Unix datagram socketpair baseline of scripts/bench_udp.py
 * (issue 16): two processes over socketpair(AF_UNIX, SOCK_DGRAM).
 *
 * Usage: dgrambench rtt|rate SIZE SECS
 *   rtt   ping-pong of SIZE-byte datagrams for SECS: {"rtt_us": mean}
 *   rate  one-way datagrams of SIZE bytes for SECS (a blocking send waits
 *         for room: a Unix datagram socket never drops):
 *         {"sent": N, "received": M, "per_s": M / SECS}
 *
 * Build: cc -O2 -o dgrambench tests/bench/dgrambench.c
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: dgrambench rtt|rate SIZE SECS\n");
        return 1;
    }
    int rtt = strcmp(argv[1], "rtt") == 0;
    size_t size = strtoul(argv[2], 0, 10);
    double secs = atof(argv[3]);
    char buf[65536];
    memset(buf, 'x', sizeof buf);
    if (size < 1 || size > sizeof buf)
        return 1;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) != 0) {
        perror("dgrambench: socketpair");
        return 1;
    }
    alarm((unsigned)secs + 30);
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        long got = 0;
        for (;;) {
            ssize_t n = recv(sv[1], buf, sizeof buf, 0);
            if (n <= 1)
                break; /* the end: a 1-byte datagram */
            got++;
            if (rtt && send(sv[1], buf, n, 0) != n)
                break;
        }
        if (!rtt && write(sv[1], &got, sizeof got) < 0)
            return 1;
        _exit(0);
    }
    close(sv[1]);
    long sent = 0;
    double start = now(), end = start + secs, t = start;
    while (t < end) {
        for (int i = 0; i < 64; i++) {
            if (send(sv[0], buf, size, 0) != (ssize_t)size) {
                perror("dgrambench: send");
                return 1;
            }
            sent++;
            if (rtt && recv(sv[0], buf, sizeof buf, 0) != (ssize_t)size) {
                perror("dgrambench: recv");
                return 1;
            }
        }
        t = now();
    }
    send(sv[0], "e", 1, 0);
    long received = sent;
    if (!rtt && read(sv[0], &received, sizeof received) != sizeof received)
        return 1;
    waitpid(pid, 0, 0);
    if (rtt)
        printf("{\"rtt_us\": %.3f}\n", (t - start) * 1e6 / sent);
    else
        printf("{\"sent\": %ld, \"received\": %ld, \"per_s\": %.0f}\n", sent, received,
               received / (t - start));
    return 0;
}
