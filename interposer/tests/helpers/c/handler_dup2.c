/* A signal handler closes an accepted emulated fd while another thread
 * holds the connection's doorbell lock (the close is deferred: the number
 * stays open as the library's), then dup2()s /dev/null onto that number.
 * The library must never close the handler's /dev/null (nor another
 * thread's file) when it closes what it deferred; worker threads make
 * hooked calls meanwhile. argv: HOST PORT ATTEMPTS. */
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

#define NW 3
static volatile int victim = -1;
static atomic_int closed_by_handler, deferred, stop, quit, lost;
static int A2, devnull; static volatile int put = -1; static int clobbered;

static void on_sig(int s) {
    (void)s;
    int e = errno;
    if (victim >= 0) {
        int v = victim;
        close(v);
        /* nested: goes to libc; succeeds only if the close was deferred */
        if (fcntl(v, F_GETFD) >= 0) {
            atomic_fetch_add(&deferred, 1);
            /* The handler puts another file on the number it closed
             * (nested: straight to libc), as it may after a close. */
            if (dup2(devnull, v) == v) put = v;
        }
        victim = -1;
        atomic_store(&closed_by_handler, 1);
    }
    errno = e;
}

static void *spinner(void *arg) {
    (void)arg;
    char b;
    while (!atomic_load(&stop)) recv(A2, &b, 1, MSG_DONTWAIT);
    return NULL;
}

static void *worker(void *arg) {
    (void)arg;
    while (!atomic_load(&quit)) {
        /* any hooked call runs release_deferred first */
        fcntl(0, F_GETFD);
    }
    return NULL;
}

static void *opener(void *arg) {
    (void)arg;
    while (!atomic_load(&quit)) {
        int p = open("/dev/null", O_RDONLY);
        if (p < 0) continue;
        for (volatile int i = 0; i < 200; i++) ;
        if (fcntl(p, F_GETFD) < 0 && errno == EBADF) {
            atomic_fetch_add(&lost, 1);
            continue; /* somebody closed it for us */
        }
        close(p);
    }
    return NULL;
}

int main(int argc, char **argv) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &sa.sin_addr);
    int attempts = atoi(argv[3]);
    struct sigaction act = {.sa_handler = on_sig, .sa_flags = SA_RESTART};
    sigaction(SIGUSR1, &act, NULL);
    devnull = open("/dev/null", O_RDONLY);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(l, (void *)&sa, sizeof sa) || listen(l, 4)) { perror("listen"); return 1; }
    pthread_t w[NW], o;
    int threads = argc > 4;
    if (threads) { for (int i = 0; i < NW; i++) pthread_create(&w[i], NULL, worker, NULL);
    pthread_create(&o, NULL, opener, NULL); }
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
        if (put >= 0) {
            fcntl(0, F_GETFD); /* a hooked call: release_deferred */
            if (fcntl(put, F_GETFD) < 0 && errno == EBADF) {
                if (!clobbered++) printf("attempt %d: the /dev/null the handler dup2'd onto fd %d was closed by the library\n", i, put);
            } else close(put);
            put = -1;
        }
        close(A2); close(C);
    }
    atomic_store(&quit, 1);
    if (threads) { for (int i = 0; i < NW; i++) pthread_join(w[i], NULL);
    pthread_join(o, NULL); }
    printf("attempts %d, closes deferred %d, opener's fds closed under it %d, handler's dup2 targets closed by the library %d\n", attempts,
           atomic_load(&deferred), atomic_load(&lost), clobbered);
    return 0;
}
