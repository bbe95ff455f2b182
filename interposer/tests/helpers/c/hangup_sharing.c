/* hangup_sharing HOST PART: epoll registrations sharing one data, each
 * hung up its own way (review s35 of the hupo1 merge; the reviewer's
 * again.c, shared2.c, crowd2.c, mix.c and rdhup2.c). Each event is one
 * registration's, with that registration's own bits, as kernel TCP
 * reports them. Prints the events of zero-timeout waits (sorted where
 * their order is the kernel's own), then "done".
 *   again    a level connection whose peer closed, a one-shot (then an
 *            edge-triggered) one reported once already and a pipe whose
 *            writer closed, one data: the pipe's IN|HUP stays IN|HUP.
 *   states   connections sharing data in different states: each its own
 *            bits (IN|RDHUP beside IN|RDHUP|HUP), not the OR of them.
 *   crowd    40 then 100 connections sharing data 9, DEL/ADD/MOD churn,
 *            every other peer closed, we shut down every fifth.
 *   quiet    an edge-triggered (or one-shot) connection we shut down and
 *            a closed one registered for nothing with the same data: the
 *            second is quiet (it said EPOLLHUP at every wait: a busy loop).
 *   rdhup    an EPOLLRDHUP-only registration beside an EPOLLIN one with
 *            its data: EPOLLRDHUP alone.
 *   reuse    a closed connection registered for nothing, kept silenced,
 *            beside 20 in turn with its data (and likely its number): each
 *            quiet after its peer's close, EPOLLHUP once we shut down
 *            (review s35 `reuse.c`: two spurious EPOLLHUPs each).
 *   pipe     a pipe whose writer closed beside two closed connections
 *            registered for nothing (the second level, then
 *            edge-triggered), one data: the pipe's EPOLLHUP at every
 *            wait, nothing for the connections (review s35 `pipehup.c`:
 *            missing at one or two waits). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static struct sockaddr_in sa;
static int lst;

static void pair(int *c, int *a) {
  *c = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(*c, (void *)&sa, sizeof sa)) { perror("connect"); exit(1); }
  *a = accept(lst, 0, 0);
  if (*a < 0) { perror("accept"); exit(1); }
}

static int cmp(const void *x, const void *y) {
  const struct epoll_event *a = x, *b = y;
  if (a->data.u64 != b->data.u64) return a->data.u64 < b->data.u64 ? -1 : 1;
  return a->events < b->events ? -1 : a->events > b->events;
}

/* One zero-timeout wait: its events sorted by data, then bits. */
static void show(int ep, const char *when) {
  static struct epoll_event out[512];
  int k = epoll_wait(ep, out, 512, 0);
  qsort(out, k > 0 ? k : 0, sizeof out[0], cmp);
  printf("%s: %d:", when, k);
  for (int i = 0; i < k; i++) printf(" %llu:%x", (unsigned long long)out[i].data.u64, out[i].events);
  printf("\n");
}

static void add(int ep, int fd, unsigned events, unsigned long long data) {
  struct epoll_event e = {.events = events, .data.u64 = data};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e)) { perror("epoll_ctl"); exit(1); }
}

static void again(unsigned once) {
  int ep = epoll_create1(0), a, pa, b, pb, f[2];
  pair(&a, &pa); pair(&b, &pb);
  add(ep, b, EPOLLIN | once, 7);
  close(pb); usleep(20000);
  show(ep, "B alone (its one report)");
  add(ep, a, EPOLLIN, 7);
  close(pa);
  if (pipe(f)) { perror("pipe"); exit(1); }
  if (write(f[1], "x", 1) != 1) exit(1);
  close(f[1]);
  add(ep, f[0], EPOLLIN, 7);
  usleep(20000);
  show(ep, "A, B, P"); show(ep, "again");
  close(a); close(b); close(f[0]); close(ep);
}

static void states(void) {
  int ep = epoll_create1(0), a1, p1, a2, p2;
  pair(&a1, &p1); pair(&a2, &p2);
  add(ep, a1, EPOLLIN | EPOLLRDHUP, 42); add(ep, a2, EPOLLIN | EPOLLRDHUP, 42);
  close(p1); close(p2); usleep(20000);
  show(ep, "both peers closed");
  shutdown(a2, SHUT_WR); usleep(20000);
  show(ep, "B shut down writing"); show(ep, "again");
  int ep2 = epoll_create1(0), a3, p3, a4, p4;
  pair(&a3, &p3); pair(&a4, &p4);
  add(ep2, a3, EPOLLIN, 43); add(ep2, a4, EPOLLIN | EPOLLRDHUP, 43);
  close(p3); close(p4); usleep(20000);
  show(ep2, "IN one, IN|RDHUP other, peers closed");
  close(a1); close(a2); close(a3); close(a4); close(ep); close(ep2);
}

static void crowd(int n, int rounds) {
  int ep = epoll_create1(0), c[128], p[128];
  for (int i = 0; i < n; i++) pair(&c[i], &p[i]);
  for (int r = 0; r <= rounds; r++)
    for (int i = 0; i < n; i++) {
      struct epoll_event e = {.events = i % 3 == 0 ? 0 : EPOLLIN | EPOLLRDHUP, .data.u64 = 9};
      if (r) epoll_ctl(ep, EPOLL_CTL_DEL, c[i], &e);
      epoll_ctl(ep, EPOLL_CTL_ADD, c[i], &e);
      if (i % 4 == 0) {
        e.data.u64 = 10; epoll_ctl(ep, EPOLL_CTL_MOD, c[i], &e);
        e.data.u64 = 9; epoll_ctl(ep, EPOLL_CTL_MOD, c[i], &e);
      }
    }
  printf("crowd %d, %d rounds\n", n, rounds);
  show(ep, "idle");
  for (int i = 0; i < n; i += 2) close(p[i]);
  usleep(30000);
  show(ep, "closed 1"); show(ep, "closed 2"); show(ep, "closed 3");
  for (int i = 0; i < n; i += 5) shutdown(c[i], SHUT_WR);
  usleep(30000);
  show(ep, "shut 1"); show(ep, "shut 2"); show(ep, "shut 3");
  for (int i = 0; i < n; i++) { close(c[i]); if (i % 2) close(p[i]); }
  close(ep);
}

/* First a connection registered `first`, its peer closed and we shut
 * down writing; then, after a wait, one registered for nothing whose peer
 * closed; one data. */
static void quiet(unsigned first) {
  int ep = epoll_create1(0), a, pa, b, pb;
  pair(&a, &pa); pair(&b, &pb);
  close(pa); usleep(10000); shutdown(a, SHUT_WR);
  add(ep, a, first, 5);
  close(pb); usleep(10000);
  show(ep, "before");
  add(ep, b, 0, 5);
  usleep(20000);
  printf("first %#x\n", first);
  show(ep, "1"); show(ep, "2"); show(ep, "3");
  close(a); close(b); close(ep);
}

static void rdhup(int variant) {
  int ep = epoll_create1(0), a, p, b, q;
  pair(&a, &p); pair(&b, &q);
  add(ep, a, EPOLLRDHUP, 3);
  close(p); close(q); shutdown(b, SHUT_WR); usleep(20000);
  printf("variant %d\n", variant);
  struct epoll_event e = {.events = 0, .data.u64 = 2};
  if (variant == 0) { epoll_ctl(ep, EPOLL_CTL_ADD, b, &e); show(ep, "A alone reported, B for nothing"); }
  e.events = EPOLLIN; e.data.u64 = 3;
  epoll_ctl(ep, variant == 0 ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, b, &e);
  show(ep, "B now EPOLLIN with A's data"); show(ep, "again");
  close(a); close(b); close(ep);
}

static int wait0(int ep, unsigned *bits) {
  struct epoll_event o[8];
  int k = epoll_wait(ep, o, 8, 0);
  *bits = 0;
  for (int i = 0; i < k; i++) *bits |= o[i].events;
  return k;
}

static void reuse(void) {
  int ep = epoll_create1(0), k, pk;
  unsigned b;
  pair(&k, &pk);
  add(ep, k, 0, 77);
  close(pk); usleep(10000);
  wait0(ep, &b);
  for (int i = 0; i < 20; i++) {
    int a, p;
    pair(&a, &p);
    add(ep, a, 0, 77);
    close(p); usleep(5000);
    unsigned b1, b2, b3;
    int k1 = wait0(ep, &b1);
    shutdown(a, SHUT_WR); usleep(5000);
    int k2 = wait0(ep, &b2), k3 = wait0(ep, &b3);
    printf("%d: closed %d %#x, shut %d %#x, again %d %#x\n", i, k1, b1, k2, b2, k3, b3);
    close(a);
  }
  close(k); close(ep);
}

static void pipes(unsigned bev) {
  int ep = epoll_create1(0), a, pa, b, pb, f[2];
  pair(&a, &pa); pair(&b, &pb);
  if (pipe(f)) { perror("pipe"); exit(1); }
  add(ep, a, 0, 5); add(ep, b, bev, 5); add(ep, f[0], 0, 5);
  close(pa); close(pb); close(f[1]); usleep(20000);
  printf("second %#x\n", bev);
  for (int w = 0; w < 6; w++) { char when[16]; snprintf(when, sizeof when, "wait %d", w); show(ep, when); }
  close(a); close(b); close(f[0]); close(ep);
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: hangup_sharing HOST PART\n"); return 2; }
  lst = socket(AF_INET, SOCK_STREAM, 0);
  sa.sin_family = AF_INET;
  inet_pton(AF_INET, argv[1], &sa.sin_addr);
  if (bind(lst, (void *)&sa, sizeof sa) || listen(lst, 256)) { perror("bind"); return 1; }
  socklen_t l = sizeof sa;
  getsockname(lst, (void *)&sa, &l);
  const char *part = argv[2];
  if (!strcmp(part, "again")) { again(EPOLLONESHOT); again(EPOLLET); }
  else if (!strcmp(part, "states")) states();
  else if (!strcmp(part, "crowd")) { crowd(40, 5); crowd(100, 3); }
  else if (!strcmp(part, "quiet")) { quiet(EPOLLET); quiet(EPOLLONESHOT); }
  else if (!strcmp(part, "rdhup")) { rdhup(0); rdhup(1); }
  else if (!strcmp(part, "reuse")) reuse();
  else if (!strcmp(part, "pipe")) { pipes(0); pipes(EPOLLET); }
  else { fprintf(stderr, "unknown part %s\n", part); return 2; }
  printf("done\n");
  return 0;
}
