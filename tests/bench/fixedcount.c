/* fixedcount: a fixed workload for instruction counts (scripts/callgrind-ab.sh).
 * fixedcount rtt N SIZE     : N ping-pongs of SIZE bytes (child echoes)
 * fixedcount stream N SIZE  : N writes of SIZE bytes, the child reads all, replies 1 byte
 * over TCP 127.77.90.1 (a port from the kernel; preload libshmnet with
 * SHMNET_PARTITIONS=127.77.90.0/24). Build: cc -O2 -o fixedcount tests/bench/fixedcount.c */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
static void full(int fd, char *b, size_t n, int rd) {
  size_t d = 0;
  while (d < n) {
    ssize_t r = rd ? recv(fd, b + d, n - d, 0) : send(fd, b + d, n - d, 0);
    if (r <= 0) { perror(rd ? "recv" : "send"); exit(1); }
    d += r;
  }
}
int main(int argc, char **argv) {
  int rtt = !strcmp(argv[1], "rtt");
  long n = atol(argv[2]);
  size_t size = atol(argv[3]);
  char *buf = calloc(1, size > 65536 ? size : 65536);
  int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET};
  inet_pton(AF_INET, "127.77.90.1", &a.sin_addr);
  if (bind(l, (void *)&a, sizeof a) || listen(l, 8)) { perror("listen"); return 1; }
  socklen_t al = sizeof a;
  getsockname(l, (void *)&a, &al);
  pid_t pid = fork();
  if (pid == 0) {
    int c = accept(l, 0, 0);
    if (rtt) {
      for (long i = 0; i < n; i++) { full(c, buf, size, 1); full(c, buf, size, 0); }
    } else {
      size_t total = n * size, got = 0;
      while (got < total) { ssize_t r = recv(c, buf, 65536, 0); if (r <= 0) exit(1); got += r; }
      full(c, buf, 1, 0);
    }
    close(c);
    _exit(0);
  }
  close(l);
  int c = socket(AF_INET, SOCK_STREAM, 0);
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(c, (void *)&a, sizeof a)) { perror("connect"); return 1; }
  if (rtt) {
    for (long i = 0; i < n; i++) { full(c, buf, size, 0); full(c, buf, size, 1); }
  } else {
    for (long i = 0; i < n; i++) full(c, buf, size, 0);
    full(c, buf, 1, 1);
  }
  close(c);
  waitpid(pid, 0, 0);
  return 0;
}
