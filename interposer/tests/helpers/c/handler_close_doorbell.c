/* A signal handler closes an emulated fd while its thread is inside the
 * library holding that connection's doorbell lock (a non-blocking recv on
 * another number of the same connection). The number must not be given to
 * another file while the doorbell may still use it (registry::defer_close):
 * afterwards the number goes to an unrelated socketpair end, and a write on
 * the connection's remaining number must ring nothing there.
 * argv: HOST PORT ATTEMPTS. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile int victim = -1;
static atomic_int closed_by_handler, stop;
static int A2;

static void on_sig(int s) {
    (void)s;
    int e = errno;
    if (victim >= 0) { close(victim); victim = -1; atomic_store(&closed_by_handler, 1); }
    errno = e;
}

static void *spinner(void *arg) {
    (void)arg;
    char b;
    while (!atomic_load(&stop)) recv(A2, &b, 1, MSG_DONTWAIT);
    return NULL;
}

int main(int argc, char **argv) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &sa.sin_addr);
    int attempts = atoi(argv[3]);
    struct sigaction act = {.sa_handler = on_sig, .sa_flags = SA_RESTART};
    sigaction(SIGUSR1, &act, NULL);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(l, (void *)&sa, sizeof sa) || listen(l, 4)) { perror("listen"); return 1; }
    srand(getpid());
    for (int i = 0; i < attempts; i++) {
        int C = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(C, (void *)&sa, sizeof sa)) { perror("connect"); return 1; }
        int A = accept(l, NULL, NULL);
        A2 = dup(A);
        atomic_store(&stop, 0);
        atomic_store(&closed_by_handler, 0);
        victim = A;
        pthread_t t;
        pthread_create(&t, NULL, spinner, NULL);
        struct timespec d = {0, 20000 + rand() % 50000};
        nanosleep(&d, NULL);
        pthread_kill(t, SIGUSR1);
        while (!atomic_load(&closed_by_handler)) ;
        atomic_store(&stop, 1);
        pthread_join(t, NULL);
        /* A is closed; give its number to an unrelated socket. */
        int sp[2];
        socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
        if (dup2(sp[0], A) < 0) { perror("dup2"); return 1; }
        fcntl(sp[1], F_SETFL, O_NONBLOCK);
        /* The peer (C) has not read yet: its flag is up, the write rings. */
        send(A2, "y", 1, MSG_NOSIGNAL);
        unsigned char b[64];
        ssize_t n = read(sp[1], b, sizeof b);
        if (n > 0) {
            printf("attempt %d: %zd byte(s) 0x%02x arrived in an unrelated socketpair now on fd %d "
                   "(the closed number still in the connection's doorbell list)\n", i, n, b[0], A);
            fflush(stdout);
            _exit(0);
        }
        close(sp[0]); close(sp[1]); close(A); close(A2); close(C);
    }
    printf("no stray byte in %d attempts\n", attempts);
    return 0;
}
