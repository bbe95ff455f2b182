/* hangup_edges HOST PART: hang-ups the library leaves out of epoll's
 * answer (decision 47), in the cases review hup14 found it spinning or
 * silencing the wrong registration, and the send paths after a peer's
 * close. Printed for hangups.rs to compare with kernel TCP's run.
 * A wait prints "spin" when its thread used more than half of its
 * timeout in CPU (the library's wait went round instead of sleeping).
 * PART:
 *  mixed      a connection shares its epoll data with a pipe whose writer
 *             closed, or a TCP socket reset by its peer registered for
 *             nothing: their hang-ups are reported, and the connection's
 *             3 bytes come one per wake-up (review: swallowed, a spin,
 *             the connection made edge-triggered: 1 byte of 3); a closed
 *             connection and such a pipe: the pipe's HUP, once a wait.
 *  exclusive  EPOLLEXCLUSIVE (and with EPOLLET) whose peer closed: quiet,
 *             and EPOLLHUP after our shutdown (review: a spin).
 *  dup        events 0 (and EPOLLET), dup'd and the first number closed,
 *             peer closed: no spin (the level one reports the Unix
 *             hang-up: only "spin" is printed for it), EPOLLHUP after our
 *             shutdown.
 *  fork       set and connection shared with a forked process: the other
 *             process's shutdown(SHUT_WR) gives the waiter EPOLLHUP
 *             (review: none, and a spin).
 *  sends      sendmmsg on a connection (two messages arrive), and after a
 *             peer's close: sendmmsg, sendfile, SO_SNDBUF 4096 and 65536
 *             (the first send goes, as much as the kernel's). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in sa, ksa;
static int lst, klst;
static volatile sig_atomic_t pipes;
static void onpipe(int s) { (void)s; pipes++; }

static int listener(struct sockaddr_in *at, const char *host) {
  at->sin_family = AF_INET;
  inet_pton(AF_INET, host, &at->sin_addr);
  int l = socket(AF_INET, SOCK_STREAM, 0);
  if (bind(l, (void *)at, sizeof *at) || listen(l, 16)) { perror("listen"); exit(1); }
  socklen_t sl = sizeof *at;
  getsockname(l, (void *)at, &sl);
  return l;
}

static void pair_on(int l, struct sockaddr_in *at, int *c, int *a) {
  *c = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(*c, (void *)at, sizeof *at)) { perror("connect"); exit(1); }
  *a = accept(l, 0, 0);
  if (*a < 0) { perror("accept"); exit(1); }
}
static void pair(int *c, int *a) { pair_on(lst, &sa, c, a); }

static void bits(char *out, unsigned e) {
  static const struct { unsigned b; const char *n; } t[] = {
      {EPOLLIN, "IN"}, {EPOLLOUT, "OUT"}, {EPOLLRDHUP, "RDHUP"}, {EPOLLHUP, "HUP"}, {EPOLLERR, "ERR"}};
  out[0] = 0;
  for (unsigned i = 0; i < sizeof t / sizeof t[0]; i++)
    if (e & t[i].b) { if (out[0]) strcat(out, "|"); strcat(out, t[i].n); }
  if (!out[0]) strcpy(out, "0");
}

static double tcpu(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

/* One wait of `ms`: its events (unless `quiet`), and "spin" if it used
 * more than half of `ms` in CPU. */
static int wait1(const char *lab, int ep, int ms, int quiet) {
  struct epoll_event out[8];
  double u = tcpu();
  int n = epoll_wait(ep, out, 8, ms);
  int spin = (tcpu() - u) * 1000 > ms / 2.0;
  char r[300] = "";
  if (n < 0) sprintf(r, " err %s", strerror(errno));
  for (int i = 0; i < n && !quiet; i++) {
    char b[80];
    bits(b, out[i].events);
    sprintf(r + strlen(r), " %s(%llu)", b, (unsigned long long)out[i].data.u64);
  }
  if (quiet) printf("%s:%s\n", lab, spin ? " spin" : "");
  else printf("%s: n=%d%s%s\n", lab, n, r, spin ? " spin" : "");
  return n;
}

static int ep_with(int c, unsigned ev, unsigned long long d) {
  int ep = epoll_create1(0);
  struct epoll_event e = {.events = ev, .data.u64 = d};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &e)) printf("add: %s\n", strerror(errno));
  return ep;
}

static void mixed(int which) {
  int c, a;
  pair(&c, &a);
  int ep = ep_with(c, EPOLLIN, 5);
  int other, otherpeer;
  struct epoll_event e = {.data.u64 = 5};
  if (which == 0) {
    int p[2];
    if (pipe(p)) exit(1);
    other = p[0]; otherpeer = p[1]; e.events = EPOLLIN;
  } else {
    pair_on(klst, &ksa, &other, &otherpeer);
    e.events = 0;
    struct linger l = {1, 0};
    setsockopt(otherpeer, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  epoll_ctl(ep, EPOLL_CTL_ADD, other, &e);
  close(otherpeer);
  usleep(30000);
  const char *lab = which ? "reset socket, events 0" : "pipe, writer closed";
  char l[100];
  sprintf(l, "%s: wait 1", lab); wait1(l, ep, 300, 0);
  sprintf(l, "%s: wait 2", lab); wait1(l, ep, 300, 0);
  epoll_ctl(ep, EPOLL_CTL_DEL, other, 0);
  close(other);
  send(a, "abc", 3, 0);
  usleep(20000);
  int got = 0, wakes = 0;
  for (int i = 0; i < 5; i++) {
    struct epoll_event o[4];
    if (epoll_wait(ep, o, 4, 300) <= 0) break;
    wakes++;
    char ch;
    if (recv(c, &ch, 1, MSG_DONTWAIT) == 1) got++;
  }
  printf("%s: then 3 bytes, 1 per wake-up: wake-ups %d, bytes %d\n", lab, wakes, got);
  close(ep); close(c); close(a);
}

/* Both hung up: a closed connection (events `ev`) and a pipe whose
 * writer closed share one data; the pipe's HUP has the bits the
 * connection's Unix socket says to events 0. */
static void both_closed(unsigned ev, const char *lab) {
  int c, a, p[2];
  pair(&c, &a);
  if (pipe(p)) exit(1);
  int ep = ep_with(c, ev, 6);
  struct epoll_event e = {.events = EPOLLIN, .data.u64 = 6};
  epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &e);
  close(a);
  close(p[1]);
  usleep(30000);
  char l[100];
  for (int i = 1; i <= 3; i++) {
    sprintf(l, "closed connection (%s) and pipe: wait %d", lab, i);
    wait1(l, ep, 300, 0);
  }
  close(ep); close(c); close(p[0]);
}

static void exclusive(void) {
  unsigned ex[] = {EPOLLEXCLUSIVE, EPOLLEXCLUSIVE | EPOLLET};
  const char *exn[] = {"EXCLUSIVE", "EXCLUSIVE|ET"};
  for (int i = 0; i < 2; i++) {
    int c, a;
    pair(&c, &a);
    int ep = ep_with(c, ex[i], 1);
    close(a);
    usleep(30000);
    char l[80];
    sprintf(l, "%s peer closed", exn[i]); wait1(l, ep, 300, 0);
    sprintf(l, "%s again", exn[i]); wait1(l, ep, 300, 0);
    shutdown(c, SHUT_WR);
    sprintf(l, "%s our shutdown", exn[i]); wait1(l, ep, 300, 0);
    close(ep); close(c);
  }
}

static void dup_closed(void) {
  unsigned dm[] = {0, EPOLLET};
  for (int i = 0; i < 2; i++) {
    int c, a;
    pair(&c, &a);
    int ep = ep_with(c, dm[i], 2);
    int d = dup(c);
    close(c);
    close(a);
    usleep(30000);
    char l[80];
    sprintf(l, "%s dup, first closed, peer closed", i ? "ET" : "0");
    wait1(l, ep, 300, !i);
    shutdown(d, SHUT_WR);
    sprintf(l, "%s then our shutdown", i ? "ET" : "0");
    wait1(l, ep, 300, 0);
    close(ep); close(d);
  }
}

static void forked(void) {
  for (int who = 0; who < 2; who++) {
    int c, a;
    pair(&c, &a);
    int ep = ep_with(c, 0, 7 + who);
    close(a);
    usleep(30000);
    wait1(who ? "child waits: peer closed" : "parent waits: peer closed", ep, 50, 0);
    pid_t p = fork();
    if (p == 0) {
      if (who == 0) { usleep(100000); shutdown(c, SHUT_WR); usleep(100000); }
      else wait1("child waits, parent's shutdown", ep, 3000, 0);
      _exit(0);
    }
    if (who == 0) wait1("parent waits, child's shutdown", ep, 3000, 0);
    else { usleep(100000); shutdown(c, SHUT_WR); }
    waitpid(p, 0, 0);
    close(ep); close(c);
  }
}

static char big[4 << 20];

static const char *res(ssize_t n, char *b) {
  if (n >= 0) sprintf(b, "%zd", n);
  else sprintf(b, "%s", strerrorname_np(errno));
  return b;
}

static void after_close(const char *how, int c, int f, size_t len) {
  struct iovec v = {big, len};
  struct mmsghdr mm[2] = {{.msg_hdr = {.msg_iov = &v, .msg_iovlen = 1}},
                          {.msg_hdr = {.msg_iov = &v, .msg_iovlen = 1}}};
  ssize_t n;
  if (f < 0) {
    n = sendmmsg(c, mm, 2, 0);
  } else {
    off_t o = 0;
    n = sendfile(c, f, &o, len);
  }
  char b1[40], b2[40];
  res(n, b1);
  int p1 = pipes;
  usleep(20000);
  int err = 0;
  socklen_t el = sizeof err;
  getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &el);
  res(send(c, big, 100, 0), b2);
  printf("%s len %zu: first %s (lens %u %u) sigpipe %d so_error %s second %s sigpipe %d\n", how, len,
         b1, f < 0 ? mm[0].msg_len : 0, f < 0 ? mm[1].msg_len : 0, p1,
         err ? strerrorname_np(err) : "0", b2, (int)pipes);
}

static void sends(void) {
  signal(SIGPIPE, onpipe);
  memset(big, 'q', sizeof big);
  {
    int c, a;
    pair(&c, &a);
    struct iovec v1 = {"ab", 2}, v2 = {"cd", 2};
    struct mmsghdr mm[2] = {{.msg_hdr = {.msg_iov = &v1, .msg_iovlen = 1}},
                            {.msg_hdr = {.msg_iov = &v2, .msg_iovlen = 1}}};
    int n = sendmmsg(c, mm, 2, 0);
    char b[8] = {0};
    int got = 0;
    while (got < 4) {
      int r = recv(a, b + got, 4 - got, 0);
      if (r <= 0) break;
      got += r;
    }
    printf("sendmmsg on a connection: %d (lens %u %u), the peer read '%s'\n", n, mm[0].msg_len,
           mm[1].msg_len, b);
    close(c); close(a);
  }
  char tmpl[] = "/tmp/hangup_edgesXXXXXX";
  int f = mkstemp(tmpl);
  if (f < 0 || write(f, big, 1 << 20) != 1 << 20) exit(1);
  unlink(tmpl);
  size_t lens[] = {100, 4 << 20};
  for (int how = 0; how < 3; how++) {
    int c, a;
    pair(&c, &a);
    close(a);
    usleep(30000);
    pipes = 0;
    if (how < 2) after_close("sendmmsg", c, -1, lens[how]);
    else after_close("sendfile", c, f, 100);
    close(c);
  }
  off_t at = lseek(f, 0, SEEK_CUR);
  printf("sendfile with an offset left the file position at %lld\n", (long long)at);
  int sizes[] = {4096, 65536};
  for (int s = 0; s < 2; s++) {
    int c, a;
    pair(&c, &a);
    setsockopt(c, SOL_SOCKET, SO_SNDBUF, &sizes[s], sizeof(int));
    close(a);
    usleep(30000);
    char b1[40], b2[40];
    res(send(c, big, 1 << 20, MSG_NOSIGNAL), b1);
    usleep(20000);
    res(send(c, big, 1 << 20, MSG_NOSIGNAL), b2);
    printf("SO_SNDBUF %d, 1 MiB sends: first %s second %s\n", sizes[s], b1, b2);
    close(c);
  }
}

int main(int argc, char **argv) {
  setvbuf(stdout, 0, _IONBF, 0);
  if (argc < 3) { fprintf(stderr, "usage: hangup_edges HOST PART\n"); return 2; }
  lst = listener(&sa, argv[1]);
  const char *part = argv[2];
  if (!strcmp(part, "mixed")) {
    /* (outside the emulated partition: a kernel socket there) */
    klst = listener(&ksa, "127.0.0.1");
    mixed(0);
    mixed(1);
    both_closed(0, "events 0");
    both_closed(EPOLLIN, "EPOLLIN");
  } else if (!strcmp(part, "exclusive")) exclusive();
  else if (!strcmp(part, "dup")) dup_closed();
  else if (!strcmp(part, "fork")) forked();
  else if (!strcmp(part, "sends")) sends();
  else { fprintf(stderr, "unknown part %s\n", part); return 2; }
  printf("done\n");
  return 0;
}
