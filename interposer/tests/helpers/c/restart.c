/* A blocking recv interrupted by a signal: with SA_RESTART it goes on and
 * returns the data that arrives later; without, it fails with EINTR — as
 * for kernel TCP. argv[1]: "restart" or "interrupt"; argv[2]: address; TEST_PORT: port. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int peer;
static volatile sig_atomic_t fired;
static void on_alarm(int sig) { (void)sig; fired++; }

static void *late_sender(void *arg) {
    (void)arg;
    usleep(400 * 1000);
    if (send(peer, "hello", 5, 0) != 5) perror("send");
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int restart = strcmp(argv[1], "restart") == 0;
    const char *port = getenv("TEST_PORT");
    if (!port) { fprintf(stderr, "restart: TEST_PORT names the port\n"); return 2; }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(port))};
    inet_pton(AF_INET, argv[2], &a.sin_addr);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(l, (void *)&a, sizeof a) || listen(l, 4)) { perror("listen"); return 3; }
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (void *)&a, sizeof a)) { perror("connect"); return 3; }
    peer = accept(l, NULL, NULL);
    struct sigaction sa = {.sa_handler = on_alarm, .sa_flags = restart ? SA_RESTART : 0};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval t = {.it_value = {0, 100 * 1000}};
    setitimer(ITIMER_REAL, &t, NULL);
    pthread_t th;
    pthread_create(&th, NULL, late_sender, NULL);
    char buf[16];
    ssize_t n = recv(c, buf, sizeof buf, 0);
    int err = errno;
    pthread_join(th, NULL);
    if (n < 0) printf("recv -1 %s signals %d\n", err == EINTR ? "EINTR" : strerror(err), (int)fired);
    else printf("recv %zd signals %d\n", n, (int)fired);
    return 0;
}
