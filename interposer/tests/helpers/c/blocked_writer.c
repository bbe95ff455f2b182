/* A thread blocks in send() (peer not reading, ring full); another thread
 * closes the fd (its last number); then the peer process is SIGKILLed. The
 * blocked send must return (EPIPE), as the kernel's does: the wait holds
 * the socket, as the kernel's send holds its file. argv: HOST PORT. */
#include <arpa/inet.h>
#include <errno.h>
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static int c;
static void *writer(void *a) {
    (void)a;
    static char buf[1 << 16];
    for (;;) {
        ssize_t n = send(c, buf, sizeof buf, MSG_NOSIGNAL);
        if (n < 0) { printf("writer: send failed: %s\n", strerror(errno)); fflush(stdout); return NULL; }
    }
}
int main(int argc, char **argv) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &sa.sin_addr);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (void *)&sa, sizeof sa) || listen(l, 4)) { perror("listen"); return 1; }
    pid_t p = fork();
    if (p == 0) { int a = accept(l, 0, 0); (void)a; pause(); _exit(0); }
    close(l);
    c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (void *)&sa, sizeof sa)) { perror("connect"); return 1; }
    pthread_t t; pthread_create(&t, 0, writer, 0);
    sleep(1);
    close(c);
    printf("main: closed the fd while the writer is blocked\n"); fflush(stdout);
    usleep(200000);
    kill(p, SIGKILL); waitpid(p, 0, 0);
    printf("main: peer killed\n"); fflush(stdout);
    struct timespec ts; clock_gettime(CLOCK_REALTIME, &ts); ts.tv_sec += 20;
    if (pthread_timedjoin_np(t, NULL, &ts)) printf("writer still blocked 20 s after the peer died\n");
    return 0;
}
