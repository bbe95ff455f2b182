// spin_longjmp HOST PORT: a UDP socket that sends a request nobody answers
// and waits in poll (it spins: SHMNET_SPIN_US large); a SIGALRM 100 us
// into the wait jumps out of its handler with siglongjmp. Then epoll_wait
// on the same socket must wake for a datagram another thread sends 100 ms
// later, and a receive must get it (before decision 45 the handler ran in
// the spin, inside the library, and the jump left the thread's library
// off: both saw nothing). The first polls run without the signal (the
// socket is set up in them; a jump out of that work is still a gap).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static sigjmp_buf jb;
static volatile sig_atomic_t jumped;
static void on_alarm(int s) { (void)s; jumped++; siglongjmp(jb, 1); }
static struct sockaddr_in ra, da;

static void *sender(void *arg) {
    (void)arg;
    usleep(100000);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    sendto(s, "x", 1, 0, (void *)&ra, sizeof ra);
    close(s);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int port = atoi(argv[2]);
    ra.sin_family = AF_INET;
    ra.sin_port = htons(port);
    inet_pton(AF_INET, argv[1], &ra.sin_addr);
    da = ra;
    da.sin_port = htons(port + 1);
    int r = socket(AF_INET, SOCK_DGRAM, 0), d = socket(AF_INET, SOCK_DGRAM, 0);
    if (bind(r, (void *)&ra, sizeof ra) || bind(d, (void *)&da, sizeof da)) { perror("bind"); return 1; }
    signal(SIGALRM, on_alarm);
    struct pollfd p = {r, POLLIN, 0};
    for (int i = 0; i < 50 && !jumped; i++) {
        sendto(r, "q", 1, 0, (void *)&da, sizeof da);
        char b[8];
        while (recv(d, b, sizeof b, MSG_DONTWAIT) > 0) {}
        if (i < 5) { poll(&p, 1, 0); continue; }
        if (sigsetjmp(jb, 1) == 0) {
            struct itimerval it = {{0, 0}, {0, 100}};
            setitimer(ITIMER_REAL, &it, 0);
            poll(&p, 1, 300);
            struct itimerval z = {{0, 0}, {0, 0}};
            setitimer(ITIMER_REAL, &z, 0);
        }
    }
    printf("jumped out of poll: %d\n", jumped);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = r}, out;
    epoll_ctl(ep, EPOLL_CTL_ADD, r, &ev);
    pthread_t t;
    pthread_create(&t, 0, sender, 0);
    printf("epoll_wait: %d\n", epoll_wait(ep, &out, 1, 3000));
    char b[8];
    printf("recv: %zd\n", recv(r, b, sizeof b, MSG_DONTWAIT));
    pthread_join(t, 0);
    return 0;
}
