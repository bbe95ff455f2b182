// cancel_leak HOST PORT ROUNDS STACKMODE: ROUNDS x 100 threads that never touch a
// socket are cancelled while they sleep in nanosleep (not in the library) and joined.
// STACKMODE "own": each thread on its own pthread_attr_setstack memory (never
// reused: distinct pthread_t values); "default": default attributes. Then a thread
// blocked in read() on a TCP connection is cancelled; a join that has not returned
// after 3 s prints "HANG".
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
static int fd;
static void *idle(void *a) { (void)a; for (;;) sleep(100); return NULL; }
static void *rd(void *a) { (void)a; char b[8]; long r = read(fd, b, sizeof b); printf("read returned %ld\n", r); return NULL; }
static int cmp(const void *a, const void *b) { pthread_t x = *(pthread_t *)a, y = *(pthread_t *)b; return x < y ? -1 : x > y; }
int main(int argc, char **argv) {
  int rounds = atoi(argv[3]), own = !strcmp(argv[4], "own");
  pthread_t *all = calloc(rounds * 100, sizeof *all);
  for (int r = 0; r < rounds; r++) {
    pthread_t t[100];
    for (int i = 0; i < 100; i++) {
      pthread_attr_t at; pthread_attr_init(&at);
      if (own) { size_t sz = 64 << 10; void *st = malloc(sz); pthread_attr_setstack(&at, st, sz); }
      else pthread_attr_setstacksize(&at, 64 << 10);
      if (pthread_create(&t[i], &at, idle, NULL)) { perror("create"); return 2; }
      all[r * 100 + i] = t[i];
    }
    usleep(2000);
    for (int i = 0; i < 100; i++) pthread_cancel(t[i]);
    for (int i = 0; i < 100; i++) pthread_join(t[i], NULL);
  }
  qsort(all, rounds * 100, sizeof *all, cmp);
  int distinct = 0; for (int i = 0; i < rounds * 100; i++) distinct += !i || all[i] != all[i - 1];
  printf("%d cancels of threads outside the library, %d distinct pthread_t\n", rounds * 100, distinct);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  inet_pton(AF_INET, argv[1], &a.sin_addr);
  int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(l, (void *)&a, sizeof a) || listen(l, 4)) { perror("bind"); return 2; }
  int c = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(c, (void *)&a, sizeof a)) { perror("connect"); return 2; }
  fd = accept(l, NULL, NULL);
  pthread_t t; pthread_create(&t, NULL, rd, NULL);
  usleep(200000);
  pthread_cancel(t);
  struct timespec ts; clock_gettime(CLOCK_REALTIME, &ts); ts.tv_sec += 3;
  void *res; int j = pthread_timedjoin_np(t, &res, &ts);
  if (j == ETIMEDOUT) { printf("HANG: the cancelled reader is still blocked after 3 s\n"); fflush(stdout); _exit(1); }
  printf("joined: %s\n", res == PTHREAD_CANCELED ? "canceled" : "returned");
  return 0;
}
