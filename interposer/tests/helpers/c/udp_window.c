/* A sender streams N numbered 4-byte UDP datagrams to a receiver as fast
 * as it can, never more than WINDOW ahead of the highest number the
 * receiver says it got (every 40 it gets; so a full queue never drops
 * one, as kernel UDP's 4 MiB receive buffer does not), then "end" with the number of times it waited
 * 2 s for a count (a count lost: it then goes on as if it came). The
 * receiver prints how many distinct numbers it got, how many twice, and
 * those waits.
 * usage: udp_window HOST [N] */
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define WINDOW 200

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    uint32_t n = argc > 2 ? (uint32_t)atoi(argv[2]) : 200000;
    int p[2];
    if (pipe(p))
        return 1;
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    pid_t pid = fork();
    if (pid == 0) {
        /* Dies with the receiver: an orphaned sender would keep the test's
           stdout open for days (review rv-udpspawn39 #1). */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1)
            _exit(1);
        uint16_t port;
        if (read(p[0], &port, 2) != 2)
            _exit(1);
        a.sin_port = port;
        int t = socket(AF_INET, SOCK_DGRAM, 0);
        struct timeval two = {.tv_sec = 2};
        setsockopt(t, SOL_SOCKET, SO_RCVTIMEO, &two, sizeof two);
        uint32_t acked = 0, stalls = 0;
        for (uint32_t i = 0; i < n; i++) {
            while (i - acked > WINDOW) {
                uint32_t k;
                ssize_t r = recv(t, &k, 4, 0);
                if (r == 4 && k > acked)
                    acked = k;
                else if (r < 0) {
                    stalls++;
                    acked = i - WINDOW;
                }
            }
            sendto(t, &i, 4, 0, (struct sockaddr *)&a, sizeof a);
        }
        usleep(300000);
        char end[9] = "end!!";
        memcpy(end + 5, &stalls, 4);
        for (int i = 0; i < 5; i++)
            sendto(t, end, sizeof end, 0, (struct sockaddr *)&a, sizeof a);
        close(t);
        _exit(0);
    }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (bind(s, (struct sockaddr *)&a, sizeof a))
        return 1;
    int big = 1 << 22;
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    socklen_t len = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &len);
    if (write(p[1], &a.sin_port, 2) != 2)
        return 1;
    uint8_t *seen = calloc(n, 1);
    uint32_t got = 0, twice = 0, count = 0, stalls = 0, top = 0;
    /* Every "end" lost (it never is): the receiver gives up. */
    struct timeval ten = {.tv_sec = 10};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &ten, sizeof ten);
    for (;;) {
        char buf[16];
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t r = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
        if (r < 0) {
            printf("no end\n");
            break;
        }
        if (r == 9) {
            memcpy(&stalls, buf + 5, 4);
            break;
        }
        if (r != 4)
            continue;
        uint32_t k;
        memcpy(&k, buf, 4);
        if (k < n && seen[k]++)
            twice++;
        else if (k < n)
            got++;
        if (k < n && k + 1 > top)
            top = k + 1;
        if (++count % 40 == 0)
            sendto(s, &top, 4, 0, (struct sockaddr *)&from, fl);
    }
    waitpid(pid, NULL, 0);
    printf("got %u of %u twice %u stalls %u\n", got, n, twice, stalls);
    return 0;
}
