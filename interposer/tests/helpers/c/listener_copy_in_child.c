/* listener_copy_in_child HOST: a UDP receiver whose forks from a signal
 * handler leave children holding its name. A 1 ms SIGALRM forks five
 * children (each sleeps CHILD_MS, then _exits) while the main thread is
 * inside the library (non-blocking receives in a loop): fork's prepare
 * handler does not give the socket back to the kernel then (decision 49
 * needs the library's locks), so each child holds a copy of the socket's
 * listener. A plain fork() from the main thread then gives the socket
 * back: the parent lets the name go, but the children's copies keep it
 * bound. A sender (forked before the socket exists, so it shares nothing)
 * then sends 300 numbered datagrams 1 ms apart: its dial reaches a
 * child's copy, which never accepts, and hangs up when the child exits.
 * Prints "armed A got N of 300 extra E": A is 1 when the name was still
 * bound after the plain fork (the case looked at), N the distinct
 * datagrams received, E the ones received twice.
 * The handler is installed with libc's own sigaction (dlsym on libc's
 * handle), past the library's hook: a wrapped handler is put off until
 * the thread leaves the library (decision 73), so its forks never come
 * from inside it; one installed past the hook (raw rt_sigaction: Go,
 * static code) still does, and is what this looks at. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define COUNT 300
#define CHILD_MS 150

static volatile int forks;
static void on_alarm(int sig) {
    (void)sig;
    int e = errno;
    if (forks < 5) {
        pid_t c = fork();
        if (c == 0) {
            struct timespec t = {0, CHILD_MS * 1000000L};
            nanosleep(&t, 0);
            _exit(0);
        }
        if (c > 0) forks++;
    }
    if (forks >= 5) {
        struct itimerval z = {0};
        setitimer(ITIMER_REAL, &z, 0);
    }
    errno = e;
}

/* Whether /proc/net/unix lists the abstract name `name`. */
static int bound(const char *name) {
    FILE *f = fopen("/proc/net/unix", "r");
    char line[512];
    int found = 0;
    while (f && fgets(line, sizeof line, f)) {
        char *at = strchr(line, '@');
        if (at && strncmp(at + 1, name, strlen(name)) == 0 && (at[1 + strlen(name)] == '\n' || at[1 + strlen(name)] == ' ')) found = 1;
    }
    if (f) fclose(f);
    return found;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int go[2];
    if (pipe(go)) return 1;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    pid_t sender = fork();
    if (sender == 0) {
        close(go[1]);
        if (read(go[0], &a.sin_port, sizeof a.sin_port) != sizeof a.sin_port) _exit(1);
        int t = socket(AF_INET, SOCK_DGRAM, 0);
        struct timespec gap = {0, 1000000};
        char b[16];
        for (int i = 0; i < COUNT; i++) {
            int n = snprintf(b, sizeof b, "%06d", i);
            sendto(t, b, n, 0, (void *)&a, sizeof a);
            nanosleep(&gap, 0);
        }
        _exit(0);
    }
    close(go[0]);
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (bind(s, (void *)&a, sizeof a)) { perror("bind"); return 1; }
    socklen_t len = sizeof a;
    getsockname(s, (void *)&a, &len);
    char name[64];
    snprintf(name, sizeof name, "shmnet.5/udp/%s:%d", argv[1], ntohs(a.sin_port));

    struct sigaction sa = {0};
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    int (*libc_sigaction)(int, const struct sigaction *, struct sigaction *) =
        dlsym(dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD), "sigaction");
    if (!libc_sigaction) { fprintf(stderr, "no libc sigaction\n"); return 1; }
    libc_sigaction(SIGALRM, &sa, 0);
    struct itimerval it = {{0, 1000}, {0, 1000}};
    setitimer(ITIMER_REAL, &it, 0);
    char b[64];
    while (forks < 5) (void)recv(s, b, sizeof b, MSG_DONTWAIT);
    pid_t plain = fork();
    if (plain == 0) _exit(0);
    waitpid(plain, 0, 0);
    int armed = bound(name);

    if (write(go[1], &a.sin_port, sizeof a.sin_port) != sizeof a.sin_port) return 1;
    static char seen[COUNT];
    int got = 0, extra = 0;
    struct timeval tv = {1, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (;;) {
        ssize_t n = recv(s, b, sizeof b - 1, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break; /* a second with nothing: the sender is done */
        b[n] = 0;
        long q = atol(b);
        if (q < 0 || q >= COUNT) continue;
        if (seen[q]) extra++;
        else got++;
        seen[q] = 1;
    }
    while (waitpid(-1, 0, 0) > 0) {}
    printf("armed %d got %d of %d extra %d\n", armed, got, COUNT, extra);
    return 0;
}
