/*
 * connect_churn ADDR PORT N: blocking connects with one free fd while
 * another thread opens and closes /dev/null (taking the free number now
 * and then). A child listens on ADDR:PORT and echoes 8 bytes. Each round:
 * socket() (the one free number), connect, retried up to 50 times when it
 * fails; after every connect the socket must be an AF_INET socket in the
 * program's (blocking) mode, and a connected one echoes 8 bytes.
 * Prints "connected C failed F other_errno X not_inet D nonblocking B
 * noecho E" (failed: connects that said EMFILE; other_errno: any other
 * error).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static atomic_int stop;

static void *churn(void *x) {
  (void)x;
  while (!stop) {
    int d = open("/dev/null", O_RDONLY);
    if (d >= 0) close(d);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: connect_churn ADDR PORT N\n"); return 2; }
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) return 2;
  int n = atoi(argv[3]);
  int ready[2];
  if (pipe(ready)) return 2;
  signal(SIGPIPE, SIG_IGN);
  pid_t child = fork();
  if (child == 0) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 128)) { perror("listen"); _exit(2); }
    if (write(ready[1], "r", 1) != 1) _exit(2);
    for (;;) {
      int c = accept(l, NULL, NULL);
      if (c < 0) continue;
      char b[8];
      int got = 0;
      while (got < 8) { int r = read(c, b + got, 8 - got); if (r <= 0) break; got += r; }
      if (got == 8) (void)!write(c, b, 8);
      close(c);
    }
  }
  char x;
  if (read(ready[0], &x, 1) != 1) return 2;
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = 64;
  if (setrlimit(RLIMIT_NOFILE, &rl)) { perror("setrlimit"); return 2; }
  int last = -1, prev = -1;
  for (;;) {
    int d = open("/dev/null", O_RDONLY);
    if (d < 0) break;
    prev = last;
    last = d;
  }
  close(last);
  close(prev);
  pthread_t t;
  pthread_create(&t, NULL, churn, NULL);
  int connected = 0, failed = 0, other = 0, not_inet = 0, nonblocking = 0, noecho = 0;
  for (int i = 0; i < n; i++) {
    int s;
    while ((s = socket(AF_INET, SOCK_STREAM, 0)) < 0) {}
    int r = -1;
    for (int k = 0; k < 50 && r; k++) {
      r = connect(s, (struct sockaddr *)&a, sizeof a);
      if (r) {
        if (errno == EMFILE) failed++;
        else { other++; fprintf(stderr, "round %d: connect: %s\n", i, strerror(errno)); }
      }
      int d = -1;
      socklen_t len = sizeof d;
      getsockopt(s, SOL_SOCKET, SO_DOMAIN, &d, &len);
      if (d != AF_INET) not_inet++;
      if (fcntl(s, F_GETFL) & O_NONBLOCK) nonblocking++;
    }
    if (!r) {
      connected++;
      unsigned long long v = 0x0123456789abcdefULL ^ i, w = 0;
      int got = 0;
      if (write(s, &v, 8) == 8)
        while (got < 8) { int q = read(s, (char *)&w + got, 8 - got); if (q <= 0) break; got += q; }
      if (got != 8 || w != v) noecho++;
    }
    close(s);
  }
  stop = 1;
  pthread_join(t, NULL);
  printf("connected %d failed %d other_errno %d not_inet %d nonblocking %d noecho %d\n", connected,
         failed, other, not_inet, nonblocking, noecho);
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  return 0;
}
