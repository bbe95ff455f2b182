/* C stdio cases around a connection on fd 0 or 1 (review of decision 55):
 * argv: host port dir case. Forks a peer that accepts one connection,
 * (for some cases) sends first, reads to the end and writes what it got to
 * DIR/peer ("got N [first bytes]"); the case writes what it saw to
 * DIR/result (the standard fds are the case's subject, so files carry
 * the results; each is renamed into place when complete). The kernel's
 * results are the test's expectation. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <pthread.h>
#include <pty.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *dir;

/* Writes `text` to DIR/name, atomically. */
static void put(const char *name, const char *text)
{
    char tmp[4096], path[4096];
    snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(tmp, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) || close(fd))
        _exit(90);
    if (rename(tmp, path))
        _exit(91);
}

static void peer(int ls, const char *greeting, int then_shut)
{
    int c = accept(ls, NULL, NULL);
    if (c < 0)
        _exit(80);
    if (greeting && write(c, greeting, strlen(greeting)) != (ssize_t)strlen(greeting))
        _exit(81);
    if (then_shut)
        shutdown(c, SHUT_WR);
    static char buf[1 << 16];
    size_t n = 0, total = 0;
    ssize_t r;
    while ((r = read(c, buf + n, sizeof buf - n)) > 0) {
        total += r;
        n = n + r < 64 ? n + r : 64; /* keep the first 64 bytes */
    }
    char out[256];
    int at = snprintf(out, sizeof out, "got %zu [", total);
    for (size_t i = 0; i < n && i < 64; i++)
        at += snprintf(out + at, sizeof out - at, buf[i] == '\n' ? "|" : "%c", buf[i]);
    snprintf(out + at, sizeof out - at, "]");
    put("peer", out);
    _exit(0);
}

static char *big;
static int big_printf;

static void *big_writer(void *arg)
{
    (void)arg;
    big_printf = printf("%s", big);
    fflush(stdout);
    return NULL;
}

/* Reads the file at DIR/name into `b`. */
static void slurp(const char *name, char *b, size_t size)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(b, 1, size - 1, f) : 0;
    b[n] = 0;
    if (f)
        fclose(f);
}

int main(int argc, char **argv)
{
    if (argc != 5)
        return 2;
    dir = argv[3];
    const char *c = argv[4];
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1))
        return 3;
    static char lines[20001];
    for (int i = 0; i < 200; i++)
        snprintf(lines + i * 100, 101, "%099d\n", i);
    const char *greeting = !strcmp(c, "stdin-assigned") ? "from-socket\n"
                           : !strcmp(c, "overread")     ? lines
                                                        : NULL;
    if (fork() == 0)
        peer(ls, greeting, !strcmp(c, "overread"));
    close(ls);

    /* thread-race: stdout is a pipe read after 1 s (its reader forked
     * before the connection exists); q carries the count back. */
    int q[2] = {-1, -1};
    if (!strcmp(c, "thread-race")) {
        int p[2];
        if (pipe(p) || pipe(q))
            return 4;
        if (fork() == 0) {
            close(p[1]);
            close(q[0]);
            sleep(1);
            char b[65536];
            long n = 0, r;
            while ((r = read(p[0], b, sizeof b)) > 0)
                n += r;
            char t[32];
            int len = snprintf(t, sizeof t, "%ld", n);
            _exit(write(q[1], t, len) == len ? 0 : 1);
        }
        close(p[0]);
        close(q[1]);
        dup2(p[1], 1);
        close(p[1]);
    }

    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&a, sizeof a))
        return 5;
    char r[8192] = {0}, b[4096] = {0};
    if (!strcmp(c, "assigned-stdout")) {
        /* The program's own stream in the variable: the kernel writes it
         * to its file whatever fd 1 is. */
        char path[4096];
        snprintf(path, sizeof path, "%s/file", dir);
        stdout = fopen(path, "w");
        printf("pending;");
        dup2(s, 1);
        printf("to-file\n");
        fclose(stdout);
        slurp("file", b, sizeof b);
        snprintf(r, sizeof r, "file=[%s]", b);
    } else if (!strcmp(c, "stdin-assigned")) {
        stdin = fmemopen("mem-input\n", 10, "r");
        dup2(s, 0);
        char *g = fgets(b, sizeof b, stdin);
        snprintf(r, sizeof r, "read=[%s]", g ? b : "NULL");
    } else if (!strcmp(c, "fclosed-stdout")) {
        /* A closed stream stays closed when fd 1 becomes a connection. */
        fclose(stdout);
        dup2(s, 1);
        int n = printf("after-fclose\n");
        snprintf(r, sizeof r, "printf=%d", n);
    } else if (!strcmp(c, "daemon") || !strcmp(c, "forkpty")) {
        dup2(s, 1);
        printf("before;");
        fflush(stdout);
        if (!strcmp(c, "daemon")) {
            /* glibc's internal dup2 puts /dev/null on fds 0-2. */
            if (daemon(1, 0))
                return 6;
            int n = printf("after-daemon\n");
            fflush(stdout);
            ssize_t w = write(1, "raw\n", 4);
            ssize_t l = readlink("/proc/self/fd/1", b, sizeof b - 1);
            b[l > 0 ? l : 0] = 0;
            snprintf(r, sizeof r, "printf=%d write=%zd fd1=%s", n, w, b);
        } else {
            int m;
            pid_t p = forkpty(&m, NULL, NULL, NULL);
            if (p < 0)
                return 7;
            if (p == 0) {
                printf("in-pty-child\n");
                fflush(stdout);
                if (write(1, "raw\n", 4) != 4)
                    _exit(1);
                _exit(0);
            }
            close(s);
            int null = open("/dev/null", O_WRONLY);
            dup2(null, 1);
            close(null);
            size_t t = 0;
            ssize_t n;
            while (t < sizeof b - 1 && (n = read(m, b + t, sizeof b - 1 - t)) > 0)
                t += n; /* to EIO: the child's side closed */
            b[t] = 0;
            waitpid(p, NULL, 0);
            for (char *x = b; *x; x++)
                if (*x == '\r' || *x == '\n')
                    *x = '|';
            snprintf(r, sizeof r, "pty=[%s]", b);
        }
    } else if (!strcmp(c, "thread-race")) {
        /* A thread is in printf on glibc's stdout (blocked on the pipe)
         * when the connection becomes fd 1: the bytes its stream still
         * holds go where glibc flushes them, the connection. */
        size_t size = 8 << 20;
        big = malloc(size);
        memset(big, 'b', size - 1);
        big[size - 1] = 0;
        pthread_t t;
        pthread_create(&t, NULL, big_writer, NULL);
        usleep(300000);
        dup2(s, 1);
        pthread_join(t, NULL);
        ssize_t n = read(q[0], b, sizeof b - 1);
        b[n > 0 ? n : 0] = 0;
        snprintf(r, sizeof r, "printf=%d pipe=%s", big_printf, b);
    } else if (!strcmp(c, "buffer-split")) {
        /* The stream's buffer on a socket is st_blksize: what went to the
         * connection at the first overflow, what stayed for the file. */
        dup2(s, 1);
        for (int i = 0; i < 600; i++)
            printf("%09d\n", i);
        char path[4096];
        snprintf(path, sizeof path, "%s/split", dir);
        int z = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
        dup2(z, 1);
        close(z);
        fflush(stdout);
        struct stat st;
        stat(path, &st);
        snprintf(r, sizeof r, "file=%ld", (long)st.st_size);
    } else if (!strcmp(c, "overread")) {
        /* How much one fgets takes from the connection (inetd's `sed 1q`):
         * stdin's buffer, once the peer's 20000 bytes are all there. */
        dup2(s, 0);
        close(s);
        int avail = 0;
        for (int i = 0; i < 5000 && (ioctl(0, FIONREAD, &avail) || avail < 20000); i++)
            usleep(1000);
        char *g = fgets(b, sizeof b, stdin);
        size_t line = g ? strlen(g) : 0;
        long rest = 0;
        ssize_t n;
        while ((n = read(0, b, sizeof b)) > 0)
            rest += n;
        snprintf(r, sizeof r, "line=%zu rest=%ld", line, rest);
    } else {
        return 8;
    }
    put("result", r);
    return 0;
}
