/* Processes and descriptor flags. CASE:
 *   spawn  two open connections (one without FD_CLOEXEC, one with): 20
 *          posix_spawn and 20 vfork+execve of /bin/true, each reaped with
 *          exit 0; before and after, 1.5 MiB each way on both connections,
 *          checked
 *   flags  SOCK_CLOEXEC / SOCK_NONBLOCK on socket() (listener and
 *          connector) and accept4() show in F_GETFD / F_GETFL, and act:
 *          non-blocking calls say EAGAIN, and an exec'd program (ls
 *          /proc/self/fd) has exactly the fds without FD_CLOEXEC
 * Prints "ok CASE". */
#include "rd.h"

#include <spawn.h>

extern char **environ;

static void exchange(struct peer *p, size_t n) {
    peer_send(p, 'T', (int64_t)(p->up.off + n));
    send_stream(p->fd, &p->up, n);
    struct reply r = peer_reply(p);
    check(r.ok == 'k' && (uint64_t)r.val == p->up.hash, "peer checksum after %llu bytes", (unsigned long long)p->up.off);
    peer_send(p, 'W', (int64_t)n);
    check(recv_stream(p->fd, &p->down, n, 10000) == 0, "receiving %zu bytes", n);
    expect_down_hash(p, peer_reply(p));
}

static void reap(pid_t pid, const char *what) {
    int st;
    check(waitpid(pid, &st, 0) == pid, "waitpid %s", what);
    check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: status %#x", what, st);
}

static void case_spawn(void) {
    struct peer a = peer_open(PEER_CONNECTS); /* accepted: no FD_CLOEXEC */
    struct peer b = peer_start(PEER_LISTENS, peer_loop);
    b.fd = connect_to(&b.addr, SOCK_CLOEXEC);
    check(!(fcntl(a.fd, F_GETFD) & FD_CLOEXEC) && (fcntl(b.fd, F_GETFD) & FD_CLOEXEC), "FD_CLOEXEC flags");
    checkpoint();
    exchange(&a, 1500000);
    exchange(&b, 1500000);
    char *argv[] = {"true", NULL};
    for (int i = 0; i < 20; i++) {
        pid_t pid;
        int r = posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ);
        check(r == 0, "posix_spawn: %s", ename(r));
        reap(pid, "posix_spawn /bin/true");
        pid = vfork();
        if (pid == 0) {
            execve("/bin/true", argv, environ);
            _exit(127);
        }
        check(pid > 0, "vfork");
        reap(pid, "vfork+execve /bin/true");
        /* A little traffic in between, in both directions. */
        exchange(i % 2 ? &a : &b, 1000 + (size_t)i);
    }
    exchange(&a, 1500000);
    exchange(&b, 1500000);
    peer_end(&a);
    peer_end(&b);
    say("ok spawn");
}

static void flags_are(int fd, int cloexec, int nonblock, const char *what) {
    int fdf = fcntl(fd, F_GETFD), fl = fcntl(fd, F_GETFL);
    check(fdf >= 0 && fl >= 0, "%s: fcntl", what);
    check(!!(fdf & FD_CLOEXEC) == cloexec, "%s: FD_CLOEXEC is %s, want %s", what, fdf & FD_CLOEXEC ? "set" : "clear",
          cloexec ? "set" : "clear");
    check(!!(fl & O_NONBLOCK) == nonblock, "%s: O_NONBLOCK is %s, want %s", what, fl & O_NONBLOCK ? "set" : "clear",
          nonblock ? "set" : "clear");
}

/* The fds an exec'd program has, as "3 4 7 " (fds 0-2 and ls's own left out). */
static void fds_after_exec(char *out, size_t size) {
    int pp[2];
    check(pipe2(pp, O_CLOEXEC) == 0, "pipe");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pp[1], 1);
    char *argv[] = {"sh", "-c", "for f in /proc/self/fd/*; do n=${f##*/}; [ $n -gt 2 ] && [ -e $f ] && printf '%s ' $n; done; true", NULL};
    pid_t pid;
    int r = posix_spawn(&pid, "/bin/sh", &fa, NULL, argv, environ);
    check(r == 0, "posix_spawn sh: %s", ename(r));
    close(pp[1]);
    size_t len = 0;
    ssize_t n;
    while ((n = read(pp[0], out + len, size - 1 - len)) > 0) len += (size_t)n;
    out[len] = 0;
    close(pp[0]);
    reap(pid, "sh listing its fds");
}

static int listed(const char *list, int fd) {
    char key[16];
    snprintf(key, sizeof key, "%d ", fd);
    for (const char *s = list; (s = strstr(s, key)); s++)
        if (s == list || s[-1] == ' ') return 1;
    return 0;
}

static void case_flags(void) {
    struct sockaddr_in a;
    int l = listener(SOCK_CLOEXEC | SOCK_NONBLOCK, &a);
    flags_are(l, 1, 1, "listener socket(SOCK_CLOEXEC|SOCK_NONBLOCK)");
    check(accept(l, NULL, NULL) < 0 && errno == EAGAIN, "accept on the non-blocking listener, nothing pending: want EAGAIN");
    struct sockaddr_in b;
    int lb = listener(0, &b);
    flags_are(lb, 0, 0, "listener socket(0)");

    int c1 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int r = connect(c1, (struct sockaddr *)&a, sizeof a);
    check(r == 0 || errno == EINPROGRESS, "connect");
    flags_are(c1, 1, 1, "connected socket(SOCK_CLOEXEC|SOCK_NONBLOCK)");
    int c2 = connect_to(&a, 0);
    flags_are(c2, 0, 0, "connected socket(0)");
    int c3 = connect_to(&a, SOCK_CLOEXEC);
    flags_are(c3, 1, 0, "connected socket(SOCK_CLOEXEC)");
    int c4 = connect_to(&b, SOCK_NONBLOCK);
    flags_are(c4, 0, 1, "connected socket(SOCK_NONBLOCK)");

    check(poll1(l, POLLIN, 5000) & POLLIN, "listener not readable with 3 connections pending");
    int a1 = accept4(l, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    check(a1 >= 0, "accept4");
    flags_are(a1, 1, 1, "accept4(SOCK_CLOEXEC|SOCK_NONBLOCK)");
    int a2 = accept4(l, NULL, NULL, 0);
    check(a2 >= 0, "accept4");
    flags_are(a2, 0, 0, "accept4(0) on a non-blocking listener");
    int a3 = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    check(a3 >= 0, "accept4");
    flags_are(a3, 1, 0, "accept4(SOCK_CLOEXEC)");
    int a4 = accept4(lb, NULL, NULL, SOCK_NONBLOCK);
    check(a4 >= 0, "accept4");
    flags_are(a4, 0, 1, "accept4(SOCK_NONBLOCK)");

    /* Non-blocking ones really are: EAGAIN with nothing to read. */
    char buf[8];
    check(recv(c1, buf, 1, 0) < 0 && errno == EAGAIN, "recv on socket(SOCK_NONBLOCK) connection: want EAGAIN");
    check(recv(a1, buf, 1, 0) < 0 && errno == EAGAIN, "recv on accept4(SOCK_NONBLOCK) connection: want EAGAIN");
    check(recv(a4, buf, 1, 0) < 0 && errno == EAGAIN, "recv on accept4(SOCK_NONBLOCK) connection: want EAGAIN");
    check(recv(c4, buf, 1, 0) < 0 && errno == EAGAIN, "recv on socket(SOCK_NONBLOCK) connection: want EAGAIN");
    /* The pairs carry data (accept order is connect order). */
    int pairs[4][2] = {{c1, a1}, {c2, a2}, {c3, a3}, {c4, a4}};
    for (int i = 0; i < 4; i++) {
        struct stream s = stream_new(10 + (uint64_t)i), v = stream_new(10 + (uint64_t)i);
        send_stream(pairs[i][0], &s, 1000);
        check(recv_stream(pairs[i][1], &v, 1000, 5000) == 0 && v.hash == s.hash, "pair %d: data", i);
        send_stream(pairs[i][1], &s, 1000);
        check(recv_stream(pairs[i][0], &v, 1000, 5000) == 0 && v.hash == s.hash, "pair %d: data back", i);
    }
    checkpoint();

    char list[4096];
    fds_after_exec(list, sizeof list);
    say("result fds-after-exec %s", list);
    struct {
        int fd, cloexec;
        const char *what;
    } all[] = {{l, 1, "listener(CLOEXEC)"}, {lb, 0, "listener"},   {c1, 1, "connector(CLOEXEC)"}, {c2, 0, "connector"},
               {c3, 1, "connector(CLOEXEC)"}, {c4, 0, "connector"}, {a1, 1, "accept4(CLOEXEC)"},    {a2, 0, "accept4"},
               {a3, 1, "accept4(CLOEXEC)"},   {a4, 0, "accept4"}};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        check(listed(list, all[i].fd) == !all[i].cloexec, "fd %d (%s) %s in the exec'd program (its fds: %.200s)", all[i].fd,
              all[i].what, all[i].cloexec ? "still open" : "missing", list);
    /* Still working after the exec'd program came and went. */
    for (int i = 0; i < 4; i++) {
        struct stream s = stream_new(20 + (uint64_t)i), v = stream_new(20 + (uint64_t)i);
        send_stream(pairs[i][0], &s, 100000);
        check(recv_stream(pairs[i][1], &v, 100000, 5000) == 0 && v.hash == s.hash, "pair %d: data after exec", i);
    }
    say("ok flags");
}

int main(int argc, char **argv) {
    rd_init(argc, argv, 40);
    if (!strcmp(g_case, "spawn")) case_spawn();
    else if (!strcmp(g_case, "flags")) case_flags();
    else fail("unknown case");
    return 0;
}
