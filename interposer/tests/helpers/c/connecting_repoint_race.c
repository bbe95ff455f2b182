// A connect in progress given up on (the 2 ms give-up, run by another
// thread's poll) re-points the application's fd onto a new connection:
// never once the application closed it and the number names another file
// (here a pipe). Usage: connecting_repoint_race HOST PORT ITERATIONS.
// Prints "clobbered N" (pipes found replaced) and whether any connect was
// in progress. (After review-c14's race.c.)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in sa;

static void *poller(void *x) {
    (void)x;
    int p[2];
    if (pipe(p)) return 0;
    struct pollfd f = {p[0], POLLIN, 0};
    for (;;) poll(&f, 1, 1);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, argv[1], &sa.sin_addr);
    sa.sin_port = htons(atoi(argv[2]));
    int iters = atoi(argv[3]);
    // The acceptor accepts (and closes) while the flag is up.
    volatile int *open_flag =
        mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    *open_flag = 1;
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t len = sizeof sa;
    if (bind(l, (void *)&sa, sizeof sa) || listen(l, 4096) || getsockname(l, (void *)&sa, &len)) {
        perror("listen");
        return 1;
    }
    pid_t s = fork();
    if (s == 0) {
        fcntl(l, F_SETFL, O_NONBLOCK);
        for (;;) {
            if (!*open_flag) { usleep(500); continue; }
            int a = accept(l, 0, 0);
            if (a < 0) { usleep(200); continue; }
            close(a);
        }
    }
    close(l);
    pthread_t t;
    pthread_create(&t, 0, poller, 0);
    srand(1);
    int offers = 0, clobbered = 0;
    for (int i = 0; i < iters; i++) {
        // Connections the acceptor takes: kept segments, past any pause
        // of offers.
        *open_flag = 1;
        for (int k = 0; k < 70; k++) {
            int c = socket(AF_INET, SOCK_STREAM, 0);
            connect(c, (void *)&sa, sizeof sa);
            close(c);
        }
        usleep(3000);
        *open_flag = 0;
        usleep(1000);
        int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        int r = connect(c, (void *)&sa, sizeof sa);
        if (r == 0 || errno != EINPROGRESS) { close(c); continue; }
        offers++;
        // Closed about when the give-up runs; the number taken by a pipe.
        struct timespec ts = {0, 1900000 + (rand() % 700000)};
        nanosleep(&ts, 0);
        close(c);
        int p[2];
        if (pipe(p)) return 1;
        int victim = p[0] == c ? p[0] : (p[1] == c ? p[1] : -1);
        usleep(5000);
        struct stat st;
        if (victim >= 0 && (fstat(victim, &st) || !S_ISFIFO(st.st_mode))) clobbered++;
        close(p[0]);
        close(p[1]);
    }
    printf("clobbered %d, in progress %s\n", clobbered, offers > 0 ? "yes" : "no");
    kill(s, SIGKILL);
    waitpid(s, 0, 0);
    return 0;
}
