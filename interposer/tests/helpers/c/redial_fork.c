/* A connect whose reuse offer goes unanswered dials again from a new
 * socket; its local port's name ("<ip>:<port>/c") may be held meanwhile by
 * a child forked while connect waited (it keeps a copy of the first dial
 * socket): the connect must still succeed (another port, said in the
 * connect message), never fail with EADDRINUSE. The server accepts once,
 * then sleeps past the offer's patience; FORK=1 forks during the wait.
 * argv: HOST PORT ROUNDS. Prints "no failure" when every round connected. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <stddef.h>

static atomic_int go, stop, won, spinning;
static char stolen[200];

static int find_name(char *out, size_t n) {
    FILE *f = fopen("/proc/net/unix", "r");
    if (!f) return 0;
    char line[512];
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        char *p = strstr(line, "@shmnet.5/tcp/127.0.0.1:");
        if (p) {
            char *e = strchr(p, '\n');
            if (e) *e = 0;
            size_t L = strlen(p);
            if (L > 2 && strcmp(p + L - 2, "/c") == 0) {
                snprintf(out, n, "%s", p + 1);
                found = 1;
                break;
            }
        }
    }
    fclose(f);
    return found;
}

static void *thief(void *arg) {
    (void)arg;
    while (!atomic_load(&go)) ;
    char name[200];
    while (!atomic_load(&stop) && !find_name(name, sizeof name)) ;
    if (atomic_load(&stop)) return NULL;
    if (getenv("FORK")) {
        /* A fork (another thread's) while connect waits for the verdict:
         * the child inherits the dial socket, bound to the name. */
        pid_t k = fork();
        if (k == 0) { usleep(2000000); _exit(0); }
        snprintf(stolen, sizeof stolen, "forked child %d holds a copy of %s", k, name);
        atomic_store(&won, 1);
        return NULL;
    }
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t L = strlen(name);
    memcpy(a.sun_path + 1, name, L);
    socklen_t len = offsetof(struct sockaddr_un, sun_path) + 1 + L;
    atomic_store(&spinning, 1);
    while (!atomic_load(&stop)) {
        if (bind(s, (void *)&a, len) == 0) {
            snprintf(stolen, sizeof stolen, "%s", name);
            atomic_store(&won, 1);
            return NULL; /* keep it */
        }
    }
    close(s);
    return NULL;
}

int main(int argc, char **argv) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &sa.sin_addr);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(l, (void *)&sa, sizeof sa) || listen(l, 16)) { perror("listen"); return 1; }
    pid_t srv = fork();
    if (srv == 0) {
        for (int i = 0;; i++) {
            int a = accept(l, NULL, NULL);
            if (a < 0) { perror("accept"); _exit(1); }
            char b;
            recv(a, &b, 1, 0);
            send(a, "k", 1, 0);
            close(a);
            usleep(300000);
        }
    }
    close(l);
    pthread_t t;
    int early = 0;
    for (int round = 0; round < atoi(argv[3]); round++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (round >= 1) {
            atomic_store(&go, 1); atomic_store(&stop, 0); atomic_store(&won, 0); atomic_store(&spinning, 0);
            pthread_create(&t, NULL, thief, NULL);
        }
        int r = connect(c, (void *)&sa, sizeof sa);
        int e = errno;
        if (r) {
            printf("round %d: connect failed: %s (thief %s '%s')\n", round, strerror(e),
                   atomic_load(&won) ? "bound" : "did not bind", stolen);
            atomic_store(&stop, 1);
            kill(srv, 9);
            return 0;
        }
        struct sockaddr_in me; socklen_t ml = sizeof me;
        getsockname(c, (void *)&me, &ml);
        char b = 0;
        send(c, "x", 1, 0);
        recv(c, &b, 1, 0);
        int sp = atomic_load(&spinning);
        early += sp;
        if (round >= 1) { atomic_store(&stop, 1); pthread_join(t, NULL); }
        if (round < 2) printf("round %d: connected from port %d, got '%c' (thief spinning before connect returned: %d)\n", round, ntohs(me.sin_port), b, sp);
        close(c);
        usleep(50000); /* both sides released: the segment is pooled */
    }
    printf("no failure; thief was spinning during connect in %d rounds\n", early);
    kill(srv, 9);
    return 0;
}
