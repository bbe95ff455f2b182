/*
 * connect_at_limit ADDR PORT: a connect with one free fd (decision 38).
 * A child listens on ADDR:PORT once told to (the first connects find no
 * listener), accepts one connection and echoes 8 bytes. The parent fills
 * its fd table to RLIMIT_NOFILE (soft limit 64) with /dev/null, frees two
 * numbers, makes a socket (one free number left), then:
 *   1. connects with nobody listening: ECONNREFUSED, and the socket is
 *      still an AF_INET stream socket (a failed connect may be retried);
 *   2. tells the child to listen and connects the same socket again
 *      (ECONNREFUSED retried until it listens): 8 bytes there and back.
 * Prints "refused R domain D connected C echoed E" (exit 0).
 * connect_at_limit ADDR PORT bind: the socket is bound to 127.0.0.1:0
 * first (a kernel name), and " name_kept K" is added: whether
 * getsockname after the refused connect says what it said before.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 3 && argc != 4) { fprintf(stderr, "usage: connect_at_limit ADDR PORT [bind]\n"); return 2; }
  int bound = argc == 4 && !strcmp(argv[3], "bind");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) return 2;
  int go[2], ready[2];
  if (pipe(go) || pipe(ready)) return 2;
  pid_t child = fork();
  if (child == 0) {
    char x;
    if (read(go[0], &x, 1) != 1) _exit(2);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 8)) { perror("listen"); _exit(2); }
    if (write(ready[1], "r", 1) != 1) _exit(2);
    int c = accept(l, NULL, NULL);
    char b[8];
    int got = 0;
    while (c >= 0 && got < 8) { int r = read(c, b + got, 8 - got); if (r <= 0) break; got += r; }
    if (got == 8 && write(c, b, 8) != 8) _exit(1);
    _exit(0);
  }
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
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) { perror("socket"); return 2; }
  struct sockaddr_in before = {0}, after = {0};
  socklen_t blen = sizeof before;
  if (bound) {
    struct sockaddr_in b = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(s, (struct sockaddr *)&b, sizeof b)) { perror("bind"); return 2; }
    getsockname(s, (struct sockaddr *)&before, &blen);
  }
  int refused = connect(s, (struct sockaddr *)&a, sizeof a) == -1 && errno == ECONNREFUSED;
  if (!refused) fprintf(stderr, "first connect: %s\n", strerror(errno));
  blen = sizeof after;
  getsockname(s, (struct sockaddr *)&after, &blen);
  int domain = -1;
  socklen_t len = sizeof domain;
  getsockopt(s, SOL_SOCKET, SO_DOMAIN, &domain, &len);
  if (write(go[1], "g", 1) != 1) return 2;
  char x;
  if (read(ready[0], &x, 1) != 1) return 2;
  int connected = 0;
  for (int i = 0; i < 200 && !connected; i++) {
    if (connect(s, (struct sockaddr *)&a, sizeof a) == 0) connected = 1;
    else if (errno == ECONNREFUSED) usleep(10000);
    else { fprintf(stderr, "second connect: %s\n", strerror(errno)); break; }
  }
  int echoed = 0;
  if (connected) {
    unsigned long long v = 0x0123456789abcdefULL, w = 0;
    int got = 0;
    if (write(s, &v, 8) == 8)
      while (got < 8) { int r = read(s, (char *)&w + got, 8 - got); if (r <= 0) break; got += r; }
    echoed = got == 8 && w == v;
  }
  printf("refused %d domain %s connected %d echoed %d", refused,
         domain == AF_INET ? "inet" : domain == AF_UNIX ? "unix" : "other", connected, echoed);
  if (bound)
    printf(" name_kept %d", before.sin_port != 0 && before.sin_port == after.sin_port &&
                                before.sin_addr.s_addr == after.sin_addr.s_addr);
  printf("\n");
  if (!connected) kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  return 0;
}
