/*
 * burstidle.c: what connections that streamed a burst once and then went
 * quiet keep resident (issue 14, decision 27). Run preloaded:
 *
 *   LD_PRELOAD=libshmnet.so burstidle [--conns N] [--burst BYTES]
 *       [--mode recv|epoll] [--quiet SECS] [--port P]
 *
 * The process forks: the parent serves, the child connects N times to
 * 127.0.0.1:P (both preloaded: shared memory). The server sends BURST
 * bytes on each connection in turn (the client reads each whole), then
 * waits for the client's last word: in `recv` mode a thread per
 * connection blocks in recv(2); in `epoll` mode one thread waits in
 * epoll_wait(2) on them all. After the last burst was read and QUIET
 * seconds passed, both processes' memory is read from /proc: the Rss of
 * their memfd:shmnet-conn mappings (smaps), RssShmem and VmRSS (status).
 * Prints one JSON object.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int conns = 1000, port = 19411;
static long burst = 4 << 20;
static double quiet = 1.0;
static int epoll_mode;

static void die(const char *what)
{
    fprintf(stderr, "burstidle: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void write_all(int fd, const char *p, long n)
{
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            die("send");
        p += k;
        n -= k;
    }
}

static void read_all(int fd, char *p, long n)
{
    while (n > 0) {
        ssize_t k = recv(fd, p, n, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            die("recv");
        p += k;
        n -= k;
    }
}

/* kB of `key` in /proc/PID/status. */
static long status_kb(int pid, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, strlen(key)))
            v = atol(line + strlen(key) + 1);
    fclose(f);
    return v;
}

/* kB resident of PID's connection-segment mappings, and how many. */
static long segment_kb(int pid, int *maps)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/smaps", pid);
    FILE *f = fopen(path, "r");
    long kb = 0;
    int ours = 0;
    *maps = 0;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        /* A mapping's first line starts with its range ("lo-hi "); the
         * fields after it with "Name:". */
        char *sp = strchr(line, ' ');
        if (sp && sp > line && strchr(line, '-') && strchr(line, '-') < sp && sp[-1] != ':') {
            ours = strstr(line, "shmnet-conn") != NULL;
            *maps += ours;
        } else if (ours && !strncmp(line, "Rss:", 4)) {
            kb += atol(line + 4);
        }
    }
    fclose(f);
    return kb;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void report(int child)
{
    int smaps, cmaps;
    long skb = segment_kb(getpid(), &smaps), ckb = segment_kb(child, &cmaps);
    printf("{\"conns\":%d,\"burst\":%ld,\"mode\":\"%s\",\"quiet_s\":%.2f,"
           "\"server\":{\"segments\":%d,\"segment_rss_kb\":%ld,\"rss_shmem_kb\":%ld,\"vm_rss_kb\":%ld},"
           "\"client\":{\"segments\":%d,\"segment_rss_kb\":%ld,\"rss_shmem_kb\":%ld,\"vm_rss_kb\":%ld}}\n",
           conns, burst, epoll_mode ? "epoll" : "recv", quiet, smaps, skb,
           status_kb(getpid(), "RssShmem:"), status_kb(getpid(), "VmRSS:"), cmaps, ckb,
           status_kb(child, "RssShmem:"), status_kb(child, "VmRSS:"));
    fflush(stdout);
}

static void *last_word(void *arg)
{
    int fd = (int)(long)arg;
    char b;
    if (recv(fd, &b, 1, 0) != 1)
        die("recv last word");
    close(fd);
    return NULL;
}

static void client(int to_server, int from_server)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int *fds = calloc(conns, sizeof *fds);
    char *buf = malloc(burst);
    for (int i = 0; i < conns; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&a, sizeof a) < 0)
            die("connect");
    }
    for (int i = 0; i < conns; i++)
        read_all(fds[i], buf, burst);
    char c = 'r';
    if (write(to_server, &c, 1) != 1 || read(from_server, &c, 1) != 1)
        die("pipe");
    for (int i = 0; i < conns; i++) {
        write_all(fds[i], "b", 1);
        close(fds[i]);
    }
    exit(0);
}

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--conns"))
            conns = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--burst"))
            burst = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--mode"))
            epoll_mode = !strcmp(argv[i + 1], "epoll");
        else if (!strcmp(argv[i], "--quiet"))
            quiet = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--port"))
            port = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "burstidle: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (conns < 1 || conns > 100000 || burst < 1) {
        fprintf(stderr, "burstidle: --conns 1..100000, --burst >= 1\n");
        return 2;
    }
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4096) < 0)
        die("listen");
    int up[2], down[2];
    if (pipe(up) < 0 || pipe(down) < 0)
        die("pipe");
    pid_t child = fork();
    if (child == 0) {
        close(l);
        client(up[1], down[0]);
    }
    int *fds = calloc(conns, sizeof *fds);
    for (int i = 0; i < conns; i++)
        if ((fds[i] = accept(l, NULL, NULL)) < 0)
            die("accept");
    char *data = malloc(burst);
    memset(data, 'x', burst);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 << 10);
    pthread_t *ts = calloc(conns, sizeof *ts);
    int ep = epoll_mode ? epoll_create1(0) : -1;
    for (int i = 0; i < conns; i++) {
        write_all(fds[i], data, burst);
        if (epoll_mode) {
            struct epoll_event ev = {.events = EPOLLIN, .data.fd = fds[i]};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0)
                die("epoll_ctl");
        } else if (pthread_create(&ts[i], &attr, last_word, (void *)(long)fds[i])) {
            die("pthread_create");
        }
    }
    if (epoll_mode) {
        /* An event loop: the client's word that it read everything comes
         * on the pipe; the measurement is a timer QUIET seconds later
         * (epoll_wait's timeout); then the connections' last words. */
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = up[0]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, up[0], &ev) < 0)
            die("epoll_ctl");
        struct epoll_event evs[64];
        int left = conns;
        double measure_at = -1;
        while (left > 0) {
            int timeout = -1;
            if (measure_at >= 0) {
                timeout = (int)((measure_at - now()) * 1000);
                if (timeout <= 0) {
                    report(child);
                    measure_at = -1;
                    if (write(down[1], "g", 1) != 1)
                        die("pipe");
                    continue;
                }
            }
            int n = epoll_wait(ep, evs, 64, timeout);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                die("epoll_wait");
            for (int k = 0; k < n; k++) {
                int fd = evs[k].data.fd;
                char b;
                if (fd == up[0]) {
                    if (read(up[0], &b, 1) != 1)
                        die("pipe");
                    epoll_ctl(ep, EPOLL_CTL_DEL, up[0], NULL);
                    measure_at = now() + quiet;
                } else if (recv(fd, &b, 1, 0) == 1) {
                    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                    close(fd);
                    left--;
                }
            }
        }
    } else {
        char c;
        if (read(up[0], &c, 1) != 1)
            die("pipe");
        usleep((useconds_t)(quiet * 1e6));
        report(child);
        if (write(down[1], "g", 1) != 1)
            die("pipe");
        for (int i = 0; i < conns; i++)
            pthread_join(ts[i], NULL);
    }
    int st;
    waitpid(child, &st, 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
