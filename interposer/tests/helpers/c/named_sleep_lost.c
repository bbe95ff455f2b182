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
 *   longjmp a SIGALRM handler siglongjmps out of the server's epoll_wait,
 *           then the server waits again;
 *   nested  a SIGALRM handler waits on S itself (20 ms) while the server
 *           sleeps on S, which then goes on sleeping;
 *   readd   (deferral, not names) the server is busy while A's data
 *           comes; another thread DELs A, the server sleeps on S, the
 *           thread ADDs A back: the kernel reports A at the ADD (looked
 *           for instead of B).
 * Prints "B seen" (and exits 0) or "LOST: B not seen in 4 s". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
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
  if (!strcmp(mode, "readd")) {
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

static void on_alarm(int sig) {
  (void)sig;
  if (!strcmp(mode, "nested")) {
    struct epoll_event e[4];
    epoll_wait(S, e, 4, 20);
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
    usleep(1000000);
    write(ca, "A", 1);
    write(cb, "B", 1);
    sleep(8);
    _exit(0);
  }
  A = accept(l, 0, 0);
  B = accept(l, 0, 0);
  fcntl(A, F_SETFL, O_NONBLOCK);
  fcntl(B, F_SETFL, O_NONBLOCK);
  S = epoll_create1(0);
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
  int readd = !strcmp(mode, "readd");
  int changes = !strcmp(mode, "del") || !strcmp(mode, "mod") || !strcmp(mode, "move") ||
                !strcmp(mode, "close") || !strcmp(mode, "dup2") || !strcmp(mode, "range") ||
                !strcmp(mode, "fork") || !strcmp(mode, "emfile") || readd;
  if (changes) pthread_create(&t, 0, changer, 0);
  if (!strcmp(mode, "longjmp") || !strcmp(mode, "nested")) {
    struct sigaction sa = {0};
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, 0);
    if (sigsetjmp(jb, 1) == 0) {
      ualarm(300000, 0);
      epoll_wait(S, ev, 8, !strcmp(mode, "nested") ? 600 : -1);
    }
  }
  if (readd) usleep(1400000); /* busy */
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
  printf(seen ? "%s seen\n" : "LOST: %s not seen in 4 s\n", readd ? "A" : "B");
  fflush(stdout);
  kill(c, SIGKILL);
  waitpid(c, 0, 0);
  return seen ? 0 : 1;
}
