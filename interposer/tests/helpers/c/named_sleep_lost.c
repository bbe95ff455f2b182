/* Named sleeps (decision 41) and what a review found losing a wake-up
 * there. A server sleeps in epoll_wait on a set S = {A, B} of two deferred
 * connections; a forked client writes A, then B, from one thread. The
 * kernel reports B at once. CASE:
 *   del     another thread takes A out of S (EPOLL_CTL_DEL) while the
 *           server sleeps (A's ring, which woke nobody, must not make the
 *           client leave B's out);
 *   mod     the same with EPOLL_CTL_MOD to events 0;
 *   move    the same, A then added to a set of its own;
 *   close   the same with close(A);
 *   dup2    the same with dup2(/dev/null, A);
 *   range   the same with close_range(A, A, 0);
 *   emfile  the same as del, every free fd taken before the first wait (no
 *           waker can be made: the set must stop deferring instead);
 *   fork    the same as del, the changer forking a child (that waits on S
 *           for 100 ms and exits) first;
 *   forkdel1  (decision 57) no thread: the server forks a child that DELs
 *           A while the server sleeps (a process with one thread that
 *           forked holding a set makes the waker again);
 *   longjmp a SIGALRM handler siglongjmps out of the server's epoll_wait,
 *           then the server waits again;
 *   nested  a SIGALRM handler waits on S itself (20 ms) while the server
 *           sleeps on S, which then goes on sleeping;
 *   readd   (deferral, not names) the server is busy while A's data
 *           comes; another thread DELs A, the server sleeps on S, the
 *           thread ADDs A back: the kernel reports A at the ADD (looked
 *           for instead of B).
 * Added by the review of decision 44 (same output unless said):
 *   childdel, childmod  a forked child DELs A from S (or MODs it to events
 *           0) while the server sleeps, and exits (CLOEXEC=1: S made with
 *           EPOLL_CLOEXEC);
 *   handoff the server, busy while A's data comes, moves A from S to S2
 *           (an eventfd only; NOEFD=1: empty), on which thread 2 sleeps:
 *           prints "A seen" or "A NOT seen";
 *   ljfork  a SIGALRM handler siglongjmps out of the server's epoll_wait;
 *           another thread DELs A while the server is busy; the server
 *           forks a child that waits 150 ms on S (prints its CPU time);
 *   pollS, nestS  another thread polls S (or waits on an outer set holding
 *           S) while the waiter sleeps; stirtimeout: MODs every 0.5 ms
 *           while the server waits with timeouts (prints the CPU time);
 *   close2, cancel, canceldel, ljreadd, ljreadd2, nested0: variants of
 *           the above (close twice, pthread_cancel of the waiter, a jump
 *           then a re-ADD, a nested wait with timeout 0).
 * Prints "B seen" (and exits 0) or "LOST: B not seen in 4 s". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <poll.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int A, B, S;
static const char *mode;
static sigjmp_buf jb;

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void *changer(void *x) {
  (void)x;
  if (!strcmp(mode, "stirtimeout")) {
    double t = now_ms(); long k = 0;
    while (now_ms() - t < 900) { struct epoll_event e = {.events = EPOLLIN, .data.fd = A};
      if (epoll_ctl(S, EPOLL_CTL_MOD, A, &e)) perror("MOD"); k++; usleep(500); }
    printf("changer: %ld MODs\n", k);
    return 0;
  }
  if (!strcmp(mode, "ljfork")) {
    usleep(600000); /* the server jumped out and is busy (not in epoll_wait) */
    if (epoll_ctl(S, EPOLL_CTL_DEL, A, NULL)) perror("DEL");
    return 0;
  }
  if (!strcmp(mode, "readd") || !strcmp(mode, "ljreadd") || !strcmp(mode, "ljreadd2")) {
    usleep(1300000); /* A's data came while the server was busy */
    if (epoll_ctl(S, EPOLL_CTL_DEL, A, NULL)) perror("DEL");
    usleep(200000); /* the server sleeps by now */
    struct epoll_event e = {.events = EPOLLIN, .data.fd = A};
    if (epoll_ctl(S, EPOLL_CTL_ADD, A, &e)) perror("ADD");
    return 0;
  }
  usleep(300000); /* the server is asleep by now */
  if (!strcmp(mode, "mod")) {
    struct epoll_event z = {.events = 0, .data.fd = A};
    if (epoll_ctl(S, EPOLL_CTL_MOD, A, &z)) perror("MOD");
  } else if (!strcmp(mode, "fork")) {
    pid_t k = fork();
    if (k == 0) {
      struct epoll_event e[4];
      epoll_wait(S, e, 4, 100);
      _exit(0);
    }
    if (epoll_ctl(S, EPOLL_CTL_DEL, A, NULL)) perror("DEL");
    waitpid(k, 0, 0);
  } else if (!strcmp(mode, "childdel") || !strcmp(mode, "childmod")) {
    pid_t k = fork();
    if (k == 0) { /* the child (sharing S) takes A out of it */
      struct epoll_event z = {.events = 0, .data.fd = A};
      if (epoll_ctl(S, !strcmp(mode, "childdel") ? EPOLL_CTL_DEL : EPOLL_CTL_MOD, A, &z)) perror("child DEL/MOD");
      _exit(0);
    }
    waitpid(k, 0, 0);
  } else if (!strcmp(mode, "pollS") || !strcmp(mode, "nestS")) {
    int O = -1;
    if (!strcmp(mode, "nestS")) { O = epoll_create1(0); struct epoll_event e = {.events = EPOLLIN, .data.u64 = 77}; if (epoll_ctl(O, EPOLL_CTL_ADD, S, &e)) perror("ADD S to O"); }
    for (int i = 0; i < 3; i++) {
      double t1 = now_ms(); int n;
      if (O < 0) { struct pollfd p = {.fd = S, .events = POLLIN}; n = poll(&p, 1, 300); }
      else { struct epoll_event e[2]; n = epoll_wait(O, e, 2, 300); }
      struct epoll_event e2[8]; int m = n > 0 ? epoll_wait(S, e2, 8, 0) : -9;
      printf("%s on S (waiter asleep on S, nothing sent): %d after %.0f ms; epoll_wait(S,0) then: %d\n", O < 0 ? "poll" : "outer epoll_wait", n, now_ms() - t1, m);
    }
  } else if (!strcmp(mode, "close2")) {
    errno = 1234;
    int r = close(A); int e1 = errno;
    int r2 = close(A); int e2 = errno;
    int r3 = close(-1); int e3 = errno;
    printf("close(A) = %d errno %d; again = %d errno %d (%s); close(-1) = %d errno %d\n", r, e1, r2, e2, strerror(e2), r3, e3);
  } else if (!strcmp(mode, "close")) {
    close(A);
  } else if (!strcmp(mode, "dup2")) {
    int z = open("/dev/null", O_RDONLY);
    if (dup2(z, A) < 0) perror("dup2");
  } else if (!strcmp(mode, "range")) {
    if (close_range(A, A, 0)) perror("close_range");
  } else if (!strcmp(mode, "move")) {
    if (epoll_ctl(S, EPOLL_CTL_DEL, A, NULL)) perror("DEL");
    int own = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN, .data.fd = A};
    if (epoll_ctl(own, EPOLL_CTL_ADD, A, &e)) perror("ADD");
  } else if (epoll_ctl(S, EPOLL_CTL_DEL, A, NULL)) { /* del, emfile */
    perror("DEL");
  }
  return 0;
}

static void *cwait(void *x) {
  (void)x;
  struct epoll_event e[8];
  int n = epoll_wait(S, e, 8, -1);
  printf("cancel: the waiter returned %d?\n", n);
  return 0;
}

static int S2;
static void *t2wait(void *x) {
  (void)x;
  struct epoll_event e[8];
  double t = now_ms();
  int n = epoll_wait(S2, e, 8, 4000);
  int seen = 0;
  for (int i = 0; i < n; i++) if (e[i].data.fd == A) seen = 1;
  printf("thread 2: epoll_wait(S2) = %d after %.0f ms: A %s\n", n, now_ms() - t, seen ? "seen" : "NOT seen");
  return 0;
}

static void on_alarm(int sig) {
  (void)sig;
  if (!strcmp(mode, "nested") || !strcmp(mode, "nested0")) {
    struct epoll_event e[4];
    epoll_wait(S, e, 4, !strcmp(mode, "nested0") ? 0 : 20);
    return;
  }
  siglongjmp(jb, 1);
}

int main(int argc, char **argv) {
  mode = argc > 1 ? argv[1] : "del";
  const char *host = getenv("TEST_HOST") ? getenv("TEST_HOST") : "127.0.0.1";
  int port = getenv("TEST_PORT") ? atoi(getenv("TEST_PORT")) : 19617;
  int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, 4);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, host, &a.sin_addr);
  if (bind(l, (void *)&a, sizeof a) || listen(l, 16)) {
    perror("listen");
    return 2;
  }
  pid_t c = fork();
  if (c == 0) {
    signal(SIGPIPE, SIG_IGN); /* close: A's peer is gone */
    int ca = socket(AF_INET, SOCK_STREAM, 0), cb = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(ca, (void *)&a, sizeof a)) _exit(3);
    usleep(50000);
    if (connect(cb, (void *)&a, sizeof a)) _exit(3);
    for (int i = 0; i < 20; i++) { /* warm-up: the server's flags defer */
      write(ca, "x", 1);
      write(cb, "x", 1);
      usleep(20000);
    }
    if (!strcmp(mode, "ljreadd2")) { usleep(500000); write(ca, "y", 1); usleep(500000); }
    else usleep(1000000);
    write(ca, "A", 1);
    write(cb, "B", 1);
    sleep(8);
    _exit(0);
  }
  A = accept(l, 0, 0);
  B = accept(l, 0, 0);
  fcntl(A, F_SETFL, O_NONBLOCK);
  fcntl(B, F_SETFL, O_NONBLOCK);
  S = epoll_create1(getenv("CLOEXEC") ? EPOLL_CLOEXEC : 0);
  struct epoll_event e = {.events = EPOLLIN, .data.fd = A};
  epoll_ctl(S, EPOLL_CTL_ADD, A, &e);
  e.data.fd = B;
  epoll_ctl(S, EPOLL_CTL_ADD, B, &e);
  if (!strcmp(mode, "emfile")) {
    struct rlimit r = {64, 64};
    if (setrlimit(RLIMIT_NOFILE, &r)) perror("setrlimit");
    while (dup(0) >= 0) {
    }
  }
  struct epoll_event ev[8];
  char buf[64];
  int got = 0;
  double start = now_ms();
  while (got < 40 && now_ms() - start < 5000) {
    int n = epoll_wait(S, ev, 8, 1000);
    for (int i = 0; i < n; i++) {
      int r = read(ev[i].data.fd, buf, sizeof buf);
      if (r > 0) got += r;
    }
  }
  if (got != 40) {
    printf("FAIL: warm-up got %d bytes of 40\n", got);
    return 1;
  }
  pthread_t t;
  int readd = !strcmp(mode, "readd") || !strcmp(mode, "ljreadd") || !strcmp(mode, "ljreadd2");
  int changes = !strcmp(mode, "del") || !strcmp(mode, "mod") || !strcmp(mode, "move") ||
                !strcmp(mode, "close") || !strcmp(mode, "childdel") || !strcmp(mode, "childmod") || !strcmp(mode, "pollS") || !strcmp(mode, "nestS") || !strcmp(mode, "close2") || !strcmp(mode, "dup2") || !strcmp(mode, "range") ||
                !strcmp(mode, "fork") || !strcmp(mode, "emfile") || readd || !strcmp(mode, "ljfork") || !strcmp(mode, "stirtimeout");
  if (!strcmp(mode, "handoff")) {
    S2 = epoll_create1(0);
    int efd = eventfd(0, EFD_NONBLOCK);
    struct epoll_event e = {.events = EPOLLIN, .data.fd = efd};
    if (!getenv("NOEFD")) epoll_ctl(S2, EPOLL_CTL_ADD, efd, &e);
    pthread_t t2;
    pthread_create(&t2, 0, t2wait, 0);
    usleep(1400000); /* busy: A's data comes (its flag down, deferred in S) */
    double t = now_ms();
    if (epoll_ctl(S, EPOLL_CTL_DEL, A, NULL)) perror("DEL");
    e.data.fd = A;
    if (epoll_ctl(S2, EPOLL_CTL_ADD, A, &e)) perror("ADD");
    printf("main: A moved from S to S2 (thread 2 sleeping on S2) at +%.0f ms\n", now_ms() - t);
    pthread_join(t2, 0);
    kill(c, SIGKILL); waitpid(c, 0, 0); return 0;
  }
  if (!strcmp(mode, "stirtimeout")) {
    pthread_create(&t, 0, changer, 0);
    usleep(20000);
    struct rusage r0, r1; getrusage(RUSAGE_SELF, &r0);
    for (int i = 0; i < 4; i++) {
      double t1 = now_ms(); int n = epoll_wait(S, ev, 8, 200);
      printf("epoll_wait(S, 200 ms) -> %d after %.0f ms", n, now_ms() - t1);
      for (int j = 0; j < n; j++) printf(" [data %llx %s]", (unsigned long long)ev[j].data.u64, ev[j].data.fd == A || ev[j].data.fd == B ? "ok" : "UNKNOWN");
      printf("\n");
    }
    getrusage(RUSAGE_SELF, &r1);
    printf("process cpu over the 4 waits: %.0f ms\n", (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) * 1e3 + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e3 + (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1e3 + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e3);
    pthread_join(t, 0); kill(c, SIGKILL); waitpid(c, 0, 0); return 0;
  }
  if (changes) pthread_create(&t, 0, changer, 0);
  pid_t fk = -1;
  if (!strcmp(mode, "forkdel1")) { /* one thread: a forked child changes S */
    fk = fork();
    if (fk == 0) {
      usleep(300000); /* the server is asleep by now */
      if (epoll_ctl(S, EPOLL_CTL_DEL, A, NULL)) perror("child DEL");
      _exit(0);
    }
  }
  if (!strcmp(mode, "longjmp") || !strcmp(mode, "nested") || !strcmp(mode, "nested0") || !strcmp(mode, "ljreadd") || !strcmp(mode, "ljreadd2") || !strcmp(mode, "ljfork")) {
    struct sigaction sa = {0};
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, 0);
    if (sigsetjmp(jb, 1) == 0) {
      ualarm(300000, 0);
      { int r = epoll_wait(S, ev, 8, !strcmp(mode, "nested") || !strcmp(mode, "nested0") ? 600 : -1); if (getenv("VERB")) printf("outer wait: %d (%s)\n", r, r < 0 ? strerror(errno) : "-"); }
    }
  }
  if (!strcmp(mode, "cancel") || !strcmp(mode, "canceldel")) {
    pthread_t w;
    pthread_create(&w, 0, cwait, 0);
    usleep(300000);
    pthread_cancel(w);
    void *res;
    pthread_join(w, &res);
    printf("waiter cancelled: %s\n", res == PTHREAD_CANCELED ? "yes" : "no");
    if (!strcmp(mode, "canceldel") && epoll_ctl(S, EPOLL_CTL_DEL, A, NULL)) perror("DEL");
  }
  if (!strcmp(mode, "ljreadd2")) { /* after the jump: read A's "y" (its flag goes down again), then busy */
    double t1 = now_ms(); int gy = 0;
    while (!gy && now_ms() - t1 < 2000) { int n = epoll_wait(S, ev, 8, 500); for (int i = 0; i < n; i++) { int r = read(ev[i].data.fd, buf, sizeof buf); if (r > 0 && ev[i].data.fd == A) gy = 1; } }
    double busy = 1400 - 300 - (now_ms() - t1);
    printf("y read; busy %.0f ms\n", busy);
    usleep(busy * 1000);
  } else
  if (readd) usleep(!strcmp(mode, "ljreadd") ? 1100000 : 1400000); /* busy */
  if (!strcmp(mode, "ljfork")) {
    usleep(400000); /* the changer DELs A meanwhile */
    pid_t k = fork();
    if (k == 0) { /* a child that takes over the loop for 1 s */
      struct rusage r0, r1; getrusage(RUSAGE_SELF, &r0);
      double t = now_ms(); int calls = 0;
      int evs = 0; while (now_ms() - t < 150) { struct epoll_event e[4]; int n = epoll_wait(S, e, 4, 150 - (int)(now_ms() - t)); if (n > 0) evs += n; calls++; }
      getrusage(RUSAGE_SELF, &r1);
      printf("child: 150 ms in epoll_wait(S, 150): cpu %.0f ms, %d returns to the app, %d events\n",
        (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) * 1e3 + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e3 +
        (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1e3 + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e3, calls, evs);
      fflush(stdout); _exit(0);
    }
    waitpid(k, 0, 0);
  }
  int target = readd ? A : B;
  double t0 = now_ms();
  int seen = 0;
  while (!seen && now_ms() - t0 < 4000) {
    int n = epoll_wait(S, ev, 8, 4000 - (int)(now_ms() - t0));
    for (int i = 0; i < n; i++) {
      int r = read(ev[i].data.fd, buf, sizeof buf);
      if (ev[i].data.fd == target && r > 0) seen = 1;
    }
  }
  if (changes) pthread_join(t, 0);
  if (fk > 0) waitpid(fk, 0, 0);
  printf(seen ? "%s seen\n" : "LOST: %s not seen in 4 s\n", readd ? "A" : "B");
  fflush(stdout);
  kill(c, SIGKILL);
  waitpid(c, 0, 0);
  return seen ? 0 : 1;
}
