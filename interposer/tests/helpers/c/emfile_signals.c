/* A process at its fd limit (every open() fails with EMFILE, which gives
 * back kept memfds: spare_fds walks every socket under the registry's
 * lock) while a 1 ms SIGALRM handler closes one dup of an emulated
 * connection: the handler's close must be a nested call (the walk runs
 * inside the re-entry guard), never a wait for the lock its own thread
 * holds. ~2000 emulated fds. argv: HOST PORT. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int victims[1200];
static volatile int nv, vi, handled;

static void on_alarm(int s) {
    (void)s;
    int e = errno;
    if (vi < nv) close(victims[vi++]);
    handled++;
    errno = e;
}

int main(int argc, char **argv) {
    struct rlimit rl = {4096, 4096};
    setrlimit(RLIMIT_NOFILE, &rl);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &sa.sin_addr);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(l, (void *)&sa, sizeof sa) || listen(l, 64)) { perror("listen"); return 1; }
    int first = -1;
    for (int i = 0; i < 500; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c, (void *)&sa, sizeof sa)) { perror("connect"); return 1; }
        if (accept(l, NULL, NULL) < 0) { perror("accept"); return 1; }
        if (first < 0) first = c;
    }
    for (nv = 0; nv < 1000; nv++) victims[nv] = dup(first);
    int files = 0;
    while (open("/dev/null", O_RDONLY) >= 0) files++;
    printf("%d emulated fds, %d files, at the limit (errno %d)\n", 2000 + nv, files, errno);
    fflush(stdout);
    struct sigaction act = {.sa_handler = on_alarm, .sa_flags = SA_RESTART};
    sigaction(SIGALRM, &act, NULL);
    struct itimerval it = {{0, 1000}, {0, 1000}};
    setitimer(ITIMER_REAL, &it, NULL);
    long fails = 0;
    for (long i = 0; i < 20000; i++) {
        if (open("/dev/null", O_RDONLY) < 0) fails++;
        else { /* a victim's close made room: take it back */ }
        if (i % 2000 == 0) { printf("open #%ld, %ld EMFILE, %d signals handled\n", i, fails, handled); fflush(stdout); }
    }
    printf("done: %ld EMFILE, %d signals handled, no hang\n", fails, handled);
    return 0;
}
