/* A UDP socket registered EPOLLIN|EPOLLEXCLUSIVE (nginx registers its UDP
 * listeners so): a forked child echoes; each of 200 rounds sends, waits in
 * epoll_wait (1 s) and receives. Prints how the ADD went and how many waits
 * timed out. argv: HOST (port 0 there). Review of udppoll16: the emulated
 * socket's fd, an epoll instance, refused EPOLLEXCLUSIVE (EINVAL), and every
 * wait timed out; a MOD of that registration, EINVAL in the kernel, then
 * succeeded. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, argv[1], &sa.sin_addr);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    socklen_t len = sizeof sa;
    if (bind(s, (void *)&sa, sizeof sa) || getsockname(s, (void *)&sa, &len)) {
        perror("bind");
        return 1;
    }
    pid_t p = fork();
    if (p == 0) {
        alarm(30);
        char b[64];
        for (;;) {
            struct sockaddr_in f;
            socklen_t l = sizeof f;
            int k = recvfrom(s, b, sizeof b, 0, (void *)&f, &l);
            if (k == 4 && !memcmp(b, "quit", 4))
                _exit(0);
            if (k >= 0)
                sendto(s, b, k, 0, (void *)&f, l);
        }
    }
    close(s);
    int c = socket(AF_INET, SOCK_DGRAM, 0);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.fd = c}, out;
    int r = epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
    printf("add %s\n", r == 0 ? "ok" : strerror(errno));
    int timed_out = 0;
    char b[64];
    for (int i = 0; i < 200; i++) {
        sendto(c, "ping", 4, 0, (void *)&sa, sizeof sa);
        if (epoll_wait(ep, &out, 1, 1000) == 0)
            timed_out++;
        while (recv(c, b, sizeof b, MSG_DONTWAIT) > 0)
            ;
    }
    printf("rounds 200 timed-out %d\n", timed_out);
    ev.events = EPOLLIN;
    r = epoll_ctl(ep, EPOLL_CTL_MOD, c, &ev);
    printf("mod %s\n", r == 0 ? "ok" : strerror(errno));
    sendto(c, "quit", 4, 0, (void *)&sa, sizeof sa);
    waitpid(p, 0, 0);
    return 0;
}
