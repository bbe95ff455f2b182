/* hangup_matrix HOST [PART]: what poll and epoll report for a TCP
 * connection, for every events mask, after the peer's close, the peer's
 * shutdown(SHUT_WR), ours, both, and closes with unread data either way;
 * and a killed peer that had read everything;
 * then the sends and reads after each (the kernel's first send after a
 * peer's close goes and is answered with a RST: EPIPE after it). Printed
 * for hangups.rs to compare with kernel TCP's run of the same program.
 * "later": a registration that was told nothing of the peer's close,
 * after this side's shutdown or send (asleep in epoll_wait meanwhile, or
 * not).
 * "shared": two connections registered with one data (a proxy's session
 * pointer), one paused (events 0) whose peer closed, the other read a byte
 * per wake-up (review s32 samedata.c: the library's wait woke for the
 * paused side's hang-up and the read blocked).
 * "crowd": 48 connections in one set under data changed by MOD, DEL and
 * ADD again, some sharing one data, one also under a dup; half of them
 * registered for nothing; every peer closes, then this side shuts down
 * writing on some (issue 14: the library finds the members an event is
 * for by its data, and a connection's registrations by the connection,
 * not by a walk over the set).
 * PART: "poll", "epoll", "send", "wait", "later", "shared", "crowd" or
 * "all" (default). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in sa;
static int lst;
static volatile sig_atomic_t pipes;
static void onpipe(int s) { (void)s; pipes++; }

static void pair(int *c, int *a) {
  *c = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(*c, (void *)&sa, sizeof sa)) { perror("connect"); exit(1); }
  *a = accept(lst, 0, 0);
  if (*a < 0) { perror("accept"); exit(1); }
}

static const char *names[] = {"peer_close", "peer_shutwr", "our_shutwr", "both_shut",
                              "peer_close_our_shut", "peer_close_unread_ours",
                              "peer_close_unread_theirs", "peer_shutwr_close_unread_ours",
                              "peer_killed"};
#define NSCEN 9

/* The connection `c` in scenario `k` (its peer `a` closed or not). */
static int scenario(int k, int *peer) {
  int c, a;
  char buf[1000];
  memset(buf, 'x', sizeof buf);
  pair(&c, &a);
  *peer = -1;
  switch (k) {
  case 0: close(a); break;
  case 1: shutdown(a, SHUT_WR); *peer = a; break;
  case 2: shutdown(c, SHUT_WR); *peer = a; break;
  case 3: shutdown(a, SHUT_WR); shutdown(c, SHUT_WR); *peer = a; break;
  case 4: close(a); usleep(20000); shutdown(c, SHUT_WR); break;
  case 5: send(c, buf, 100, 0); usleep(20000); close(a); break;
  case 6: send(a, buf, sizeof buf, 0); close(a); break;
  case 7: shutdown(a, SHUT_WR); usleep(20000); send(c, buf, 100, 0); usleep(20000); close(a); break;
  case 8: { /* the peer's only holder, a child, killed (it had read
             * everything): the kernel closes its socket */
    pid_t p = fork();
    if (p == 0) { close(c); pause(); _exit(0); }
    close(a);
    usleep(20000);
    kill(p, SIGKILL);
    waitpid(p, 0, 0);
    break;
  }
  }
  usleep(50000);
  return c;
}

static void bits(char *out, unsigned e) {
  static const struct { unsigned b; const char *n; } t[] = {
      {EPOLLIN, "IN"}, {EPOLLOUT, "OUT"}, {EPOLLRDHUP, "RDHUP"}, {EPOLLHUP, "HUP"},
      {EPOLLERR, "ERR"}, {EPOLLPRI, "PRI"}};
  out[0] = 0;
  for (unsigned i = 0; i < sizeof t / sizeof t[0]; i++)
    if (e & t[i].b) { if (out[0]) strcat(out, "|"); strcat(out, t[i].n); }
  e &= ~(EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI);
  if (e) sprintf(out + strlen(out), "%s%#x", out[0] ? "|" : "", e);
  if (!out[0]) strcpy(out, "0");
}

static const struct { unsigned ev; const char *n; } emasks[] = {
    {0, "0"}, {EPOLLIN, "IN"}, {EPOLLOUT, "OUT"}, {EPOLLRDHUP, "RDHUP"},
    {EPOLLIN | EPOLLOUT, "IN|OUT"}, {EPOLLIN | EPOLLRDHUP, "IN|RDHUP"},
    {EPOLLOUT | EPOLLRDHUP, "OUT|RDHUP"}, {EPOLLIN | EPOLLOUT | EPOLLRDHUP, "IN|OUT|RDHUP"},
    {EPOLLET, "ET"}, {EPOLLIN | EPOLLET, "IN|ET"}, {EPOLLOUT | EPOLLET, "OUT|ET"},
    {EPOLLRDHUP | EPOLLET, "RDHUP|ET"}, {EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, "IN|OUT|RDHUP|ET"}};
#define NEM (sizeof emasks / sizeof emasks[0])

static const struct { short ev; const char *n; } pmasks[] = {
    {0, "0"}, {POLLIN, "IN"}, {POLLOUT, "OUT"}, {POLLRDHUP, "RDHUP"},
    {POLLIN | POLLRDHUP, "IN|RDHUP"}, {POLLOUT | POLLRDHUP, "OUT|RDHUP"}, {POLLIN | POLLOUT, "IN|OUT"}};
#define NPM (sizeof pmasks / sizeof pmasks[0])

/* Two waits on a new set holding `c` with `ev`: the first 20 ms at most,
 * the second 0 (edge-triggered: nothing new). */
static void epoll_twice(const char *what, int c, unsigned ev, const char *lab) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event e = {.events = ev, .data.u64 = 7};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &e)) { printf("%s epoll %s: ctl %s\n", what, lab, strerror(errno)); close(ep); return; }
  char r[2][80];
  for (int i = 0; i < 2; i++) {
    struct epoll_event out[4];
    int n = epoll_wait(ep, out, 4, i ? 0 : 20);
    if (n < 0) sprintf(r[i], "err %s", strerror(errno));
    else if (n == 0) strcpy(r[i], "none");
    else bits(r[i], out[0].events);
  }
  printf("%s epoll %-16s %s ; %s\n", what, lab, r[0], r[1]);
  close(ep);
}

static void poll_once(const char *what, int c, short ev, const char *lab) {
  struct pollfd p = {c, ev, 0};
  int n = poll(&p, 1, 20);
  char r[80];
  if (n < 0) sprintf(r, "err %s", strerror(errno));
  else if (n == 0) strcpy(r, "none");
  else bits(r, (unsigned)(unsigned short)p.revents);
  printf("%s poll %-10s %s\n", what, lab, r);
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

/* The closed connection registered with `ev` (which the kernel reports
 * nothing for) beside a pipe written 100 ms later: only the pipe, after
 * the write; the wait sleeps (CPU well under the 100 ms). */
static void wait_beside_pipe(const char *what, int c, unsigned ev, const char *lab) {
  int ep = epoll_create1(EPOLL_CLOEXEC), fds[2];
  if (pipe(fds)) { perror("pipe"); exit(1); }
  struct epoll_event e = {.events = ev, .data.u64 = 7};
  epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
  e.events = EPOLLIN; e.data.u64 = 9;
  epoll_ctl(ep, EPOLL_CTL_ADD, fds[0], &e);
  if (fork() == 0) { usleep(100000); write(fds[1], "!", 1); _exit(0); }
  double t = now(), u = cpu();
  struct epoll_event out[4];
  int n = epoll_wait(ep, out, 4, 2000);
  double waited = now() - t, used = cpu() - u;
  char r[200] = "";
  for (int i = 0; i < n; i++) {
    char b[80];
    bits(b, out[i].events);
    sprintf(r + strlen(r), " %s:%s", out[i].data.u64 == 9 ? "pipe" : "conn", b);
  }
  printf("%s beside-pipe epoll %-6s n=%d%s waited=%s sleeps=%s\n", what, lab, n, r,
         waited >= 0.05 ? "yes" : "no", used < 0.05 ? "yes" : "no");
  struct pollfd p[2] = {{c, (short)(ev & 0xffff & ~EPOLLET), 0}, {fds[0], POLLIN, 0}};
  char junk;
  read(fds[0], &junk, 1);
  if (fork() == 0) { usleep(100000); write(fds[1], "!", 1); _exit(0); }
  t = now(); u = cpu();
  n = poll(p, 2, 2000);
  waited = now() - t; used = cpu() - u;
  printf("%s beside-pipe poll %-6s n=%d conn=%#x pipe=%#x waited=%s sleeps=%s\n", what, lab, n,
         p[0].revents, p[1].revents, waited >= 0.05 ? "yes" : "no", used < 0.05 ? "yes" : "no");
  while (wait(0) > 0) {}
  close(fds[0]); close(fds[1]); close(ep);
}

static const char *res(ssize_t n, char *buf) {
  if (n >= 0) sprintf(buf, "%zd", n);
  else sprintf(buf, "%s", strerrorname_np(errno));
  return buf;
}

/* Sends and reads after the scenario, in several orders (each result
 * written down at once, before errno changes). */
static void sends(const char *what, int k) {
  char data[100], got[2000], b1[40], b2[40], b3[40], b4[40];
  memset(data, 'y', sizeof data);
  int peer, c;
  /* send, poll, send, recv, recv (MSG_NOSIGNAL) */
  c = scenario(k, &peer);
  res(send(c, data, sizeof data, MSG_NOSIGNAL), b1); usleep(20000);
  struct pollfd p = {c, POLLIN | POLLOUT | POLLRDHUP, 0};
  poll(&p, 1, 0);
  char pb[80]; bits(pb, (unsigned)(unsigned short)p.revents);
  res(send(c, data, sizeof data, MSG_NOSIGNAL), b2); usleep(20000);
  res(recv(c, got, sizeof got, MSG_DONTWAIT), b3);
  res(recv(c, got, sizeof got, MSG_DONTWAIT), b4);
  printf("%s sends send=%s poll=%s send=%s recv=%s recv=%s\n", what, b1, pb, b2, b3, b4);
  close(c); if (peer >= 0) close(peer);
  /* A killed peer (8) with no sign of its death seen before the first
   * send: that send goes into its ring, and the bytes left unread make
   * the library report a reset (ECONNRESET to SO_ERROR or a read) where
   * the kernel's RST after the FIN leaves EPIPE (docs/compatibility.md,
   * "Resets": a peer killed with no sign seen): those two orders are left
   * out for it. */
  if (k == 8) goto sigpipe;
  /* send, SO_ERROR, send, recv */
  c = scenario(k, &peer);
  res(send(c, data, sizeof data, MSG_NOSIGNAL), b1); usleep(20000);
  int err = 0; socklen_t len = sizeof err;
  getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &len);
  res(send(c, data, sizeof data, MSG_NOSIGNAL), b2); usleep(20000);
  res(recv(c, got, sizeof got, MSG_DONTWAIT), b3);
  printf("%s soerror send=%s so_error=%s send=%s recv=%s\n", what, b1,
         err ? strerrorname_np(err) : "0", b2, b3);
  close(c); if (peer >= 0) close(peer);
  /* send, recv, recv, send */
  c = scenario(k, &peer);
  res(send(c, data, sizeof data, MSG_NOSIGNAL), b1); usleep(20000);
  res(recv(c, got, sizeof got, MSG_DONTWAIT), b2);
  res(recv(c, got, sizeof got, MSG_DONTWAIT), b3);
  res(send(c, data, sizeof data, MSG_NOSIGNAL), b4);
  printf("%s recvfirst send=%s recv=%s recv=%s send=%s\n", what, b1, b2, b3, b4);
  close(c); if (peer >= 0) close(peer);
sigpipe:
  /* SIGPIPE without MSG_NOSIGNAL; epoll events 0 / IN after the first send */
  c = scenario(k, &peer);
  pipes = 0;
  res(send(c, data, sizeof data, 0), b1); usleep(20000);
  int p1 = pipes;
  epoll_twice(what, c, 0, "0 after-send");
  epoll_twice(what, c, EPOLLIN, "IN after-send");
  res(send(c, data, sizeof data, 0), b2);
  int p2 = pipes;
  res(write(c, data, sizeof data), b3);
  printf("%s sigpipe send=%s pipes=%d send=%s pipes=%d write=%s pipes=%d\n", what, b1, p1, b2, p2,
         b3, (int)pipes);
  close(c); if (peer >= 0) close(peer);
}

static int later_ep;
static char later_got[120];

static void *later_waiter(void *arg) {
  (void)arg;
  struct epoll_event out[4];
  int n = epoll_wait(later_ep, out, 4, 3000);
  if (n < 0) sprintf(later_got, "err %s", strerror(errno));
  else if (n == 0) strcpy(later_got, "none");
  else bits(later_got, out[0].events);
  return 0;
}

/* After the peer's close (k 0) or its close with data unread (6), a set
 * registering the connection with `ev` is waited on (nothing, as TCP says),
 * then this side does `what` ("shutwr" or "send") and the set is waited on
 * again; "asleep": a thread sleeps in the wait while it does. */
static void later(int k, unsigned ev, const char *lab, const char *what, int asleep) {
  int peer, c = scenario(k, &peer);
  later_ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event e = {.events = ev, .data.u64 = 7}, out[4];
  epoll_ctl(later_ep, EPOLL_CTL_ADD, c, &e);
  char before[80], after[80];
  int n = epoll_wait(later_ep, out, 4, 20);
  if (n > 0) bits(before, out[0].events); else strcpy(before, n ? "err" : "none");
  pthread_t t;
  if (asleep) { pthread_create(&t, 0, later_waiter, 0); usleep(50000); }
  if (!strcmp(what, "shutwr")) shutdown(c, SHUT_WR);
  else send(c, "z", 1, MSG_NOSIGNAL);
  if (asleep) { pthread_join(t, 0); strcpy(after, later_got); }
  else {
    n = epoll_wait(later_ep, out, 4, 20);
    if (n > 0) bits(after, out[0].events); else strcpy(after, n ? "err" : "none");
  }
  /* (Not after a sleep: the kernel's waiter wakes at the first change,
   * and the ACK of our FIN may come after the look below or before it,
   * another write-space edge.) */
  n = asleep ? 0 : epoll_wait(later_ep, out, 4, 0);
  char again[80];
  if (asleep) strcpy(again, "-");
  else if (n > 0) bits(again, out[0].events); else strcpy(again, n ? "err" : "none");
  printf("%s later %-6s %-8s %s: before %s, after %s, again %s\n", names[k], lab, what,
         asleep ? "asleep" : "awake", before, after, again);
  close(later_ep); close(c); if (peer >= 0) close(peer);
}

/* The paused side `a` (events `ev`, its peer closed; `also`: this side
 * shut down writing too) and the read side `b` (EPOLLIN, 3 bytes coming)
 * under one data. */
static void shared(unsigned ev, const char *lab, int also) {
  int pa, a = scenario(0, &pa), qb, b, c;
  pair(&c, &qb);
  b = qb;
  if (also) shutdown(a, SHUT_WR);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event e = {.events = ev, .data.u64 = 5}, out[4];
  epoll_ctl(ep, EPOLL_CTL_ADD, a, &e);
  e.events = EPOLLIN;
  epoll_ctl(ep, EPOLL_CTL_ADD, b, &e);
  int n = epoll_wait(ep, out, 4, 20);
  char first[80];
  if (n > 0) bits(first, out[0].events); else strcpy(first, n ? "err" : "none");
  send(c, "abc", 3, 0);
  usleep(20000);
  int got = 0, wakes = 0;
  for (int i = 0; i < 5; i++) {
    n = epoll_wait(ep, out, 4, 50);
    if (n <= 0) break;
    wakes++;
    char ch;
    if (recv(b, &ch, 1, MSG_DONTWAIT) == 1) got++;
  }
  printf("shared %-6s%s first %s, wake-ups %d, bytes %d of 3\n", lab, also ? " (both shut)" : "",
         first, wakes, got);
  close(ep); close(a); close(b); close(c);
}

static int by_data(const void *x, const void *y) {
  const struct epoll_event *a = x, *b = y;
  if (a->data.u64 != b->data.u64) return a->data.u64 < b->data.u64 ? -1 : 1;
  return a->events < b->events ? -1 : a->events > b->events;
}

/* One wait on `ep` (`ms` at most): its events, sorted by data. */
static void crowd_wait(int ep, int ms, const char *lab) {
  struct epoll_event out[128];
  int n = epoll_wait(ep, out, 128, ms);
  printf("crowd %s: %d events\n", lab, n);
  if (n <= 0) return;
  qsort(out, n, sizeof out[0], by_data);
  for (int i = 0; i < n; i++) {
    char b[80];
    bits(b, out[i].events);
    printf("crowd %s: data %llu %s\n", lab, (unsigned long long)out[i].data.u64, b);
  }
}

#define NCROWD 48
static void crowd(void) {
  int c[NCROWD], p[NCROWD];
  int ep = epoll_create1(EPOLL_CLOEXEC);
  for (int i = 0; i < NCROWD; i++) {
    pair(&c[i], &p[i]);
    unsigned ev = i % 2 ? EPOLLIN | EPOLLRDHUP : 0;
    struct epoll_event e = {.events = ev, .data.u64 = i};
    epoll_ctl(ep, EPOLL_CTL_ADD, c[i], &e);
    e.data.u64 = 1000 + i;
    epoll_ctl(ep, EPOLL_CTL_MOD, c[i], &e);
    if (i % 4 == 0) {
      epoll_ctl(ep, EPOLL_CTL_DEL, c[i], &e);
      e.data.u64 = 2000 + i;
      epoll_ctl(ep, EPOLL_CTL_ADD, c[i], &e);
    }
    if (i % 8 == 1 || i % 8 == 2) {
      e.data.u64 = 5000;
      epoll_ctl(ep, EPOLL_CTL_MOD, c[i], &e);
    }
  }
  int d = dup(c[3]);
  struct epoll_event e = {.events = 0, .data.u64 = 9000};
  epoll_ctl(ep, EPOLL_CTL_ADD, d, &e);
  crowd_wait(ep, 0, "open");
  for (int i = 0; i < NCROWD; i++) close(p[i]);
  usleep(20000);
  crowd_wait(ep, 20, "closed");
  crowd_wait(ep, 0, "closed again");
  for (int i = 0; i < NCROWD; i += 6) shutdown(c[i], SHUT_WR);
  shutdown(c[3], SHUT_WR);
  usleep(20000);
  crowd_wait(ep, 20, "shut");
  crowd_wait(ep, 0, "shut again");
  close(ep); close(d);
  for (int i = 0; i < NCROWD; i++) close(c[i]);
}

int main(int argc, char **argv) {
  setvbuf(stdout, 0, _IONBF, 0);
  signal(SIGPIPE, onpipe);
  const char *part = argc > 2 ? argv[2] : "all";
  int all = !strcmp(part, "all");
  sa.sin_family = AF_INET;
  inet_pton(AF_INET, argv[1], &sa.sin_addr);
  lst = socket(AF_INET, SOCK_STREAM, 0);
  if (bind(lst, (void *)&sa, sizeof sa) || listen(lst, 64)) { perror("listen"); return 1; }
  socklen_t sl = sizeof sa;
  getsockname(lst, (void *)&sa, &sl);
  for (int k = 0; k < NSCEN; k++) {
    int peer, c;
    if (all || !strcmp(part, "epoll"))
      for (unsigned m = 0; m < NEM; m++) {
        c = scenario(k, &peer);
        epoll_twice(names[k], c, emasks[m].ev, emasks[m].n);
        close(c); if (peer >= 0) close(peer);
      }
    if (all || !strcmp(part, "poll"))
      for (unsigned m = 0; m < NPM; m++) {
        c = scenario(k, &peer);
        poll_once(names[k], c, pmasks[m].ev, pmasks[m].n);
        close(c); if (peer >= 0) close(peer);
      }
    if ((all || !strcmp(part, "wait")) && (k == 0 || k == 6 || k == 8)) {
      c = scenario(k, &peer);
      wait_beside_pipe(names[k], c, 0, "0");
      wait_beside_pipe(names[k], c, EPOLLET, "ET");
      close(c); if (peer >= 0) close(peer);
    }
    if (all || !strcmp(part, "send"))
      sends(names[k], k);
    if ((all || !strcmp(part, "later")) && (k == 0 || k == 6 || k == 8))
      for (int w = 0; w < 2; w++)
        for (int asleep = 0; asleep < 2; asleep++) {
          later(k, 0, "0", w ? "send" : "shutwr", asleep);
          later(k, EPOLLET, "ET", w ? "send" : "shutwr", asleep);
          later(k, EPOLLOUT | EPOLLET, "OUT|ET", w ? "send" : "shutwr", asleep);
        }
  }
  if (all || !strcmp(part, "shared")) {
    shared(0, "0", 0);
    shared(EPOLLET, "ET", 0);
    shared(0, "0", 1);
  }
  if (all || !strcmp(part, "crowd"))
    crowd();
  printf("done\n");
  return 0;
}
