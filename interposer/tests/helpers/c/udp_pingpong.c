/* UDP ping-pong between two processes (interposer/tests/datagrams.rs).
 *
 *   udp_pingpong HOST PORT ROUNDS SIZE
 *
 * A forked child binds HOST:PORT and echoes ROUNDS datagrams; the parent,
 * unbound (it takes a port at its first send), sends ROUNDS datagrams of
 * SIZE bytes, each a different pattern, and checks every echo byte for
 * byte and its source. Prints "rtt_ns N" (the mean round trip). Exits 0
 * on success. Blocking sockets, recvfrom/sendto only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int die(const char *what) {
    perror(what);
    exit(2);
}

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 5)
        return 2;
    int port = atoi(argv[2]), rounds = atoi(argv[3]);
    size_t size = (size_t)atol(argv[4]);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1)
        return 2;
    int ready[2];
    if (pipe(ready))
        die("pipe");
    static char buf[70000], want[70000];
    pid_t pid = fork();
    if (pid == 0) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        if (bind(s, (struct sockaddr *)&a, sizeof a))
            die("bind");
        write(ready[1], "k", 1);
        for (int i = 0; i < rounds; i++) {
            struct sockaddr_in from;
            socklen_t len = sizeof from;
            ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
            if (n < 0 || sendto(s, buf, n, 0, (struct sockaddr *)&from, len) != n)
                die("echo");
        }
        _exit(0);
    }
    char k;
    if (read(ready[0], &k, 1) != 1)
        die("child");
    int c = socket(AF_INET, SOCK_DGRAM, 0);
    double start = 0;
    for (int i = 0; i < rounds; i++) {
        if (i == 1)
            start = now_ns(); /* the first round registers */
        for (size_t j = 0; j < size; j++)
            want[j] = (char)(j * 7 + i);
        if (sendto(c, want, size, 0, (struct sockaddr *)&a, sizeof a) != (ssize_t)size)
            die("sendto");
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(c, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
        if (n != (ssize_t)size || memcmp(buf, want, size) != 0) {
            fprintf(stderr, "round %d: %zd bytes, not the %zu sent\n", i, n, size);
            return 1;
        }
        if (from.sin_port != a.sin_port || from.sin_addr.s_addr != a.sin_addr.s_addr) {
            fprintf(stderr, "round %d: from the wrong address\n", i);
            return 1;
        }
    }
    double rtt = rounds > 1 ? (now_ns() - start) / (rounds - 1) : 0;
    int st;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return 1;
    printf("rtt_ns %.0f\n", rtt);
    return 0;
}
