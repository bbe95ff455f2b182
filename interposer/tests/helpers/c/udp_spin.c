/* Receivers that spin and receivers that sleep (interposer/tests/datagrams.rs,
 * `spinning_receivers_lose_nothing`): the fast path of a blocking receive
 * (spin on the segments with the doorbell flag down, raise it, look once
 * more, sleep) carries every byte and never misses a wake-up.
 *
 *   udp_spin HOST PORT
 *
 * 1. stream: a forked child sends 100,000 datagrams of 8 to 1,200 bytes
 *    as fast as it can; the parent checks each one it gets byte for byte
 *    (UDP may drop, never tear or reorder one sender's datagrams).
 * 2. ping-pong: 3,000 round trips, both sides sleeping a random while
 *    (none, a few us, up to 300 us, now and then 2 ms) before they answer,
 *    so each receive is found spinning, in the middle of raising its flag,
 *    or asleep. A lost wake-up hangs: the harness's timeout fails it.
 * 3. kill: a child sends in a tight loop and is SIGKILLed mid-stream;
 *    what it left is intact, and a second sender then gets 200 answers
 *    (retrying after a 1 s receive timeout: the receiver is not wedged).
 *
 * Prints "stream N of M", "pingpong 3000", "kill left N, answered 200";
 * exits 0 on success, 1 with a message on a bad datagram.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void fail(const char *what, uint32_t seq) {
    fprintf(stderr, "udp_spin: %s (seq %u)\n", what, seq);
    exit(1);
}

/* Datagram `seq` of a stream: "seq, len" then a pattern of both. */
static size_t make(unsigned char *b, uint32_t seq, unsigned tag) {
    size_t len = 8 + (seq * 2654435761u >> 7) % 1193;
    memcpy(b, &seq, 4);
    uint32_t l = (uint32_t)len | tag << 24;
    memcpy(b + 4, &l, 4);
    for (size_t i = 8; i < len; i++)
        b[i] = (unsigned char)(seq * 31 + i * 7 + tag);
    return len;
}

/* Checks a stream datagram; its seq. */
static uint32_t check(const unsigned char *b, ssize_t n, unsigned tag) {
    uint32_t seq, l;
    if (n < 8)
        fail("short datagram", 0);
    memcpy(&seq, b, 4);
    memcpy(&l, b + 4, 4);
    if (l >> 24 != tag)
        fail("wrong sender", seq);
    unsigned char want[1300];
    size_t len = make(want, seq, tag);
    if ((size_t)n != len || memcmp(b, want, len) != 0)
        fail("torn or wrong datagram", seq);
    return seq;
}

static int bound(struct sockaddr_in *a) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0)
        die("socket");
    if (bind(s, (struct sockaddr *)a, sizeof *a))
        die("bind");
    return s;
}

static void timeout(int s, int secs) {
    struct timeval tv = {.tv_sec = secs};
    if (setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv))
        die("SO_RCVTIMEO");
}

static void pause_a_while(void) {
    int r = rand() % 100;
    if (r < 30)
        return;
    struct timespec t = {0, 0};
    if (r < 60)
        t.tv_nsec = 1000 * (rand() % 10);
    else if (r < 98)
        t.tv_nsec = 1000 * (rand() % 300);
    else
        t.tv_nsec = 2000000;
    nanosleep(&t, NULL);
}

#define STREAM 100000
#define ROUNDS 3000
#define END 0xffffffffu

static void stream(struct sockaddr_in *rx) {
    static unsigned char b[1300];
    int r = bound(rx);
    pid_t pid = fork();
    if (pid == 0) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        for (uint32_t seq = 0; seq < STREAM; seq++) {
            size_t len = make(b, seq, 1);
            if (sendto(s, b, len, 0, (struct sockaddr *)rx, sizeof *rx) != (ssize_t)len)
                die("stream send");
        }
        uint32_t end = END;
        for (int i = 0; i < 200; i++) { /* UDP: the end may be dropped */
            sendto(s, &end, 4, 0, (struct sockaddr *)rx, sizeof *rx);
            usleep(1000);
        }
        _exit(0);
    }
    timeout(r, 20);
    long got = 0;
    int64_t last = -1;
    for (;;) {
        ssize_t n = recv(r, b, sizeof b, 0);
        if (n < 0)
            die("stream recv");
        if (n == 4 && memcmp(b, &(uint32_t){END}, 4) == 0)
            break;
        uint32_t seq = check(b, n, 1);
        if ((int64_t)seq <= last)
            fail("out of order", seq);
        last = seq;
        got++;
    }
    if (waitpid(pid, NULL, 0) != pid)
        die("waitpid");
    if (got == 0)
        fail("nothing received", 0);
    close(r);
    printf("stream %ld of %d\n", got, STREAM);
}

static void pingpong(struct sockaddr_in *rx, struct sockaddr_in *echo) {
    int r = bound(rx);
    pid_t pid = fork();
    if (pid == 0) {
        srand(2);
        int e = bound(echo);
        uint32_t seq;
        struct sockaddr_in from;
        for (int i = 0; i < ROUNDS; i++) {
            socklen_t fl = sizeof from;
            if (recvfrom(e, &seq, 4, 0, (struct sockaddr *)&from, &fl) != 4)
                die("echo recv");
            pause_a_while();
            seq = ~seq;
            if (sendto(e, &seq, 4, 0, (struct sockaddr *)&from, fl) != 4)
                die("echo send");
        }
        _exit(0);
    }
    srand(1);
    usleep(100000); /* the echo side binds */
    for (uint32_t i = 0; i < ROUNDS; i++) {
        pause_a_while();
        if (sendto(r, &i, 4, 0, (struct sockaddr *)echo, sizeof *echo) != 4)
            die("ping send");
        uint32_t back;
        if (recv(r, &back, 4, 0) != 4)
            die("ping recv");
        if (back != ~i)
            fail("wrong answer", i);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid || st != 0)
        fail("echo side failed", 0);
    close(r);
    printf("pingpong %d\n", ROUNDS);
}

static void kill_mid_stream(struct sockaddr_in *rx) {
    static unsigned char b[1300];
    int r = bound(rx);
    pid_t pid = fork();
    if (pid == 0) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        for (uint32_t seq = 0;; seq++) {
            size_t len = make(b, seq, 2);
            sendto(s, b, len, 0, (struct sockaddr *)rx, sizeof *rx);
        }
    }
    timeout(r, 10);
    long left = 0;
    for (int i = 0; i < 2000; i++) {
        ssize_t n = recv(r, b, sizeof b, 0);
        if (n < 0)
            die("kill recv");
        check(b, n, 2);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    /* A second sender: each request answered, retried on a timeout. */
    pid_t asker = fork();
    if (asker == 0) {
        int s = socket(AF_INET, SOCK_DGRAM, 0);
        timeout(s, 1);
        for (uint32_t i = 0; i < 200; i++) {
            unsigned char q[8] = "ask";
            memcpy(q + 4, &i, 4);
            for (int tries = 0;; tries++) {
                if (tries == 20)
                    _exit(3);
                sendto(s, q, 8, 0, (struct sockaddr *)rx, sizeof *rx);
                uint32_t back;
                if (recv(s, &back, 4, 0) == 4 && back == i)
                    break;
            }
        }
        _exit(0);
    }
    int answered = 0;
    while (answered < 200) {
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(r, b, sizeof b, 0, (struct sockaddr *)&from, &fl);
        if (n < 0)
            die("kill recv after");
        if (n == 8 && memcmp(b, "ask", 4) == 0) {
            uint32_t i;
            memcpy(&i, b + 4, 4);
            sendto(r, &i, 4, 0, (struct sockaddr *)&from, fl);
            if (i + 1 > (uint32_t)answered)
                answered = (int)i + 1;
            continue;
        }
        check(b, n, 2);
        left++;
    }
    int st;
    if (waitpid(asker, &st, 0) != asker || st != 0)
        fail("the second sender got no answers", 0);
    close(r);
    printf("kill left %ld, answered %d\n", left, answered);
}

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    int port = atoi(argv[2]);
    struct sockaddr_in a = {.sin_family = AF_INET};
    if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1)
        return 2;
    setvbuf(stdout, NULL, _IONBF, 0);
    a.sin_port = htons(port);
    stream(&a);
    struct sockaddr_in e = a;
    e.sin_port = htons(port + 1);
    a.sin_port = htons(port + 2);
    pingpong(&a, &e);
    a.sin_port = htons(port + 3);
    kill_mid_stream(&a);
    return 0;
}
