/* dup2 onto one of an emulated connection's numbers while another thread
 * writes on another number of the same connection (each write rings: the
 * reader sleeps). The doorbell must stop using the number before the
 * kernel re-points it (Bell::while_replacing): no 0x01 byte may reach the
 * unrelated socketpair put there, and no wake-up may be lost.
 *
 * Connection a (server side) has numbers A and A2. Thread W writes 'x' on
 * the number that is not the Bell's first; thread R reads the peer end with
 * SO_RCVTIMEO 2 s. The main thread re-points the Bell's first number at a
 * socketpair end sp[0] and back. argv: HOST PORT ROUNDS. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static atomic_int safe_fd, ack_epoch, stop;
static atomic_long writes, reads, timeouts;
static int C;

static void *writer(void *arg) {
    (void)arg;
    int seen = -1;
    while (!atomic_load(&stop)) {
        int fd = atomic_load(&safe_fd);
        int ep = atomic_load(&ack_epoch);
        if (send(fd, "x", 1, MSG_NOSIGNAL) == 1) atomic_fetch_add(&writes, 1);
        (void)seen;
        atomic_store(&ack_epoch, ep | 1); /* acknowledges epoch ep */
    }
    return NULL;
}

static void *reader(void *arg) {
    (void)arg;
    char buf[4096];
    while (!atomic_load(&stop)) {
        ssize_t n = recv(C, buf, sizeof buf, 0);
        if (n > 0) atomic_fetch_add(&reads, n);
        else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            atomic_fetch_add(&timeouts, 1);
            printf("reader: recv timed out after 2 s with the writer busy (lost wake-up)\n");
            fflush(stdout);
        } else if (n == 0) { printf("reader: EOF\n"); break; }
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *host = argv[1];
    int port = atoi(argv[2]);
    long rounds = atol(argv[3]);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(l, (void *)&sa, sizeof sa) || listen(l, 4)) { perror("listen"); return 1; }
    C = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(C, (void *)&sa, sizeof sa)) { perror("connect"); return 1; }
    int A = accept(l, NULL, NULL);
    int A2 = dup(A);
    struct timeval tv = {2, 0};
    setsockopt(C, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int sp[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
    fcntl(sp[1], F_SETFL, O_NONBLOCK);
    /* Bell list: [A, A2]; first = A. */
    int first = A, other = A2;
    atomic_store(&safe_fd, other);
    pthread_t w, r;
    pthread_create(&r, NULL, reader, NULL);
    pthread_create(&w, NULL, writer, NULL);
    long stray = 0, other_bytes = 0;
    for (long i = 0; i < rounds && !atomic_load(&timeouts); i++) {
        /* W writes on `other`; re-point `first` (the Bell's first number). */
        if (dup2(sp[0], first) < 0) { perror("dup2"); return 1; }
        if (dup2(other, first) < 0) { perror("dup2 back"); return 1; }
        /* Now the list is [other, first]: swap roles, wait for W to move. */
        int t = first; first = other; other = t;
        int ep = (int)(i * 2 + 2);
        atomic_store(&ack_epoch, ep);
        atomic_store(&safe_fd, other);
        while (atomic_load(&ack_epoch) == ep && !atomic_load(&stop)) ;
        /* one more write on the new fd, so W is surely off `first` */
        int ep2 = ep + 2;
        atomic_store(&ack_epoch, ep2);
        while (atomic_load(&ack_epoch) == ep2) ;
        unsigned char b[256];
        ssize_t n;
        while ((n = read(sp[1], b, sizeof b)) > 0)
            for (ssize_t k = 0; k < n; k++) { if (b[k] == 1) stray++; else other_bytes++; }
    }
    sleep(3);
    atomic_store(&stop, 1);
    unsigned char b[256];
    ssize_t n;
    while ((n = read(sp[1], b, sizeof b)) > 0)
        for (ssize_t k = 0; k < n; k++) { if (b[k] == 1) stray++; else other_bytes++; }
    printf("writes %ld, bytes read by peer %ld, doorbell bytes (0x01) found in the unrelated socketpair: %ld, other bytes there: %ld, reader timeouts: %ld\n",
           atomic_load(&writes), atomic_load(&reads), stray, other_bytes, atomic_load(&timeouts));
    fflush(stdout);
    _exit(0);
}
