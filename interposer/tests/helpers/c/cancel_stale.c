// cancel_stale HOST PORT: a thread that never touched a socket is cancelled in
// nanosleep and joined; a new thread (the same pthread_t: glibc's stack cache)
// then (1) recv(MSG_WAITALL) of 10 bytes with 5 queued (5 more come after 0.3 s),
// (2) again, a blocking write of 4 MiB (the peer starts reading after 0.3 s).
// Kernel: 10, and 4194304 (no signal is sent to the new thread).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
static int fd, c;
static void *idle(void *a) { (void)a; for (;;) sleep(100); return NULL; }
static void *waitall(void *a) { (void)a; char b[10]; long r = recv(fd, b, 10, MSG_WAITALL);
  printf("recv(MSG_WAITALL, 10) returned %ld%s\n", r, r < 0 ? strerror(errno) : ""); return NULL; }
static char big[4 << 20];
static void *bigwrite(void *a) { (void)a; long r = write(fd, big, sizeof big);
  printf("blocking write of %zu returned %ld\n", sizeof big, r); return NULL; }
static pthread_t kill_one(void) { pthread_t t; pthread_create(&t, NULL, idle, NULL); usleep(10000); pthread_cancel(t); pthread_join(t, NULL); return t; }
int main(int argc, char **argv) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  inet_pton(AF_INET, argv[1], &a.sin_addr);
  int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(l, (void *)&a, sizeof a) || listen(l, 4)) { perror("bind"); return 2; }
  c = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(c, (void *)&a, sizeof a)) { perror("connect"); return 2; }
  fd = accept(l, NULL, NULL);
  pthread_t gone = kill_one(), t;
  write(c, "01234", 5);
  pthread_create(&t, NULL, waitall, NULL);
  printf("new thread %s the cancelled one's pthread_t\n", pthread_equal(gone, t) ? "has" : "does not have");
  usleep(300000); write(c, "56789", 5); pthread_join(t, NULL);
  gone = kill_one();
  pthread_create(&t, NULL, bigwrite, NULL);
  usleep(300000);
  static char sink[1 << 16]; long total = 0, n;
  while (total < (long)sizeof big && (n = read(c, sink, sizeof sink)) > 0) { total += n; if (total >= (long)sizeof big) break;
    struct timeval tv = {0, 300000}; setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv); }
  pthread_join(t, NULL);
  return 0;
}
