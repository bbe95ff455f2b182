// cancel_in_handler HOST PORT: a worker blocks in read() on a TCP connection; a
// SIGUSR1 handler (SA_RESTART) cancels the worker, and the signal is delivered
// to the worker itself (as a process-directed SIGINT/SIGTERM often is).
// Prints how long from pthread_kill to the join.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
static int fd; static pthread_t worker;
static void h(int s) { (void)s; pthread_cancel(worker); }
static void *rd(void *a) { (void)a; char b[4]; read(fd, b, 1); return NULL; }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
  struct sigaction sa = {0}; sa.sa_handler = h; sa.sa_flags = SA_RESTART; sigaction(SIGUSR1, &sa, NULL);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  inet_pton(AF_INET, argv[1], &a.sin_addr);
  int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(l, (void *)&a, sizeof a) || listen(l, 4)) { perror("bind"); return 2; }
  int c = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(c, (void *)&a, sizeof a)) { perror("connect"); return 2; }
  fd = accept(l, NULL, NULL);
  for (int i = 0; i < 3; i++) {
    pthread_create(&worker, NULL, rd, NULL); usleep(100000);
    double t0 = now(); pthread_kill(worker, SIGUSR1);
    struct timespec ts; clock_gettime(CLOCK_REALTIME, &ts); ts.tv_sec += 3;
    void *res; int j = pthread_timedjoin_np(worker, &res, &ts);
    if (j == ETIMEDOUT) { printf("HANG: not cancelled after 3 s\n"); fflush(stdout); _exit(1); }
    printf("%s after %.1f ms\n", res == PTHREAD_CANCELED ? "canceled" : "returned", (now() - t0) * 1e3);
  }
  return 0;
}
