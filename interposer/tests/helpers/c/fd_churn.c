/*
 * fd_churn ADDR PORT N LIMIT: accept at the fd limit while other threads
 * open and close fds (review of fd14, Medium). Sets RLIMIT_NOFILE's soft
 * limit to LIMIT, forks a client that makes N connections one after the
 * other (8 bytes out, the same 8 back, checked); the server listens
 * (non-blocking), one thread polls and accepts (EMFILE: waits 0.5 ms and
 * tries again, as a server would), three threads keep opening a pipe,
 * /dev/null and a Unix socket and closing them, so the numbers free at
 * the limit come and go under the accept, and one forks every 3 ms (the
 * child exits at once; the listener is then shared with a forked
 * process, whose connections wait in a shared parking queue).
 *
 * Kernel TCP never loses a connection there: accept says EMFILE and
 * leaves it queued. A connection the client saw accepted but never
 * answered is "lost" (the client reads EOF or a reset).
 *
 * Prints "ok O lost L failed F accepted A echoed E" (exit 0).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_int stop, accepted, echoed;
static int listener;

static void *churn(void *arg) {
  unsigned seed = (unsigned)(long)arg;
  while (!stop) {
    int fds[4], n = 0, p[2];
    if (pipe2(p, O_CLOEXEC) == 0) { fds[n++] = p[0]; fds[n++] = p[1]; }
    int d = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (d >= 0) fds[n++] = d;
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s >= 0) fds[n++] = s;
    usleep(rand_r(&seed) % 300);
    for (int i = 0; i < n; i++) close(fds[i]);
  }
  return NULL;
}

static void *forker(void *arg) {
  (void)arg;
  while (!stop) {
    pid_t c = fork();
    if (c == 0) _exit(0);
    if (c > 0) waitpid(c, NULL, 0);
    usleep(3000);
  }
  return NULL;
}

static void *acceptor(void *arg) {
  (void)arg;
  while (!stop) {
    struct pollfd pf = {.fd = listener, .events = POLLIN};
    if (poll(&pf, 1, 100) <= 0) continue;
    int c = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EMFILE || errno == ENFILE) usleep(500);
      continue;
    }
    atomic_fetch_add(&accepted, 1);
    char b[8];
    int got = 0;
    while (got < 8) {
      int r = read(c, b + got, 8 - got);
      if (r <= 0) break;
      got += r;
    }
    if (got == 8 && write(c, b, 8) == 8) atomic_fetch_add(&echoed, 1);
    close(c);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 5) { fprintf(stderr, "usage: fd_churn ADDR PORT N LIMIT\n"); return 2; }
  int n = atoi(argv[3]);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) return 2;
  int ready[2], result[2];
  if (pipe(ready) || pipe(result)) return 2;
  pid_t client = fork();
  if (client == 0) {
    char x;
    if (read(ready[0], &x, 1) != 1) _exit(2);
    int ok = 0, lost = 0, failed = 0;
    for (int i = 0; i < n; i++) {
      int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a)) { failed++; close(s); usleep(1000); continue; }
      unsigned long long v = 0x5a5a000000000000ULL | (unsigned)i, w = 0;
      int got = 0;
      if (write(s, &v, 8) == 8)
        while (got < 8) { int r = read(s, (char *)&w + got, 8 - got); if (r <= 0) break; got += r; }
      if (got == 8 && w == v) ok++; else lost++;
      close(s);
    }
    dprintf(result[1], "ok %d lost %d failed %d", ok, lost, failed);
    _exit(0);
  }
  close(ready[0]);
  close(result[1]);
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = atoi(argv[4]);
  if (setrlimit(RLIMIT_NOFILE, &rl)) { perror("setrlimit"); return 2; }
  listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(listener, (struct sockaddr *)&a, sizeof a) || listen(listener, 64)) { perror("listen"); return 2; }
  pthread_t t[5];
  pthread_create(&t[0], NULL, acceptor, NULL);
  for (long i = 1; i < 4; i++) pthread_create(&t[i], NULL, churn, (void *)i);
  pthread_create(&t[4], NULL, forker, NULL);
  if (write(ready[1], "g", 1) != 1) return 2;
  int st;
  waitpid(client, &st, 0);
  stop = 1;
  for (int i = 0; i < 5; i++) pthread_join(t[i], NULL);
  char line[128] = {0};
  if (read(result[0], line, sizeof line - 1) <= 0) { fprintf(stderr, "no client result\n"); return 1; }
  printf("%s accepted %d echoed %d\n", line, accepted, echoed);
  return 0;
}
