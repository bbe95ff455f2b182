// cancel_handler_busy HOST PORT: for recv, accept and poll, a thread T blocks
// in that call on a TCP connection (listener); a SIGUSR1 handler (SA_RESTART)
// interrupts it and computes for 0.5 s (no system calls); main calls
// pthread_cancel(T) while it runs, then joins T (20 s limit). Prints what the
// join saw (review s31 cancel2: the recv was restarted after the handler and
// never ended).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
static int fd, lfd; static const char *mode; static volatile int inside;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static void on_usr1(int s) { (void)s; inside = 1; double end = now() + 0.5; while (now() < end) ; }
static void *blocked(void *a) { (void)a; char b[8];
  if (mode[0] == 'a') accept(lfd, NULL, NULL);
  else if (mode[0] == 'p') { struct pollfd p = {fd, POLLIN, 0}; poll(&p, 1, -1); }
  else recv(fd, b, 8, 0);
  return (void *)1; }
int main(int argc, char **argv) {
  (void)argc;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  inet_pton(AF_INET, argv[1], &a.sin_addr);
  int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(l, (void *)&a, sizeof a) || listen(l, 4)) { perror("bind"); return 2; }
  lfd = l;
  struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_RESTART}; sigaction(SIGUSR1, &sa, NULL);
  const char *modes[] = {"recv", "accept", "poll"};
  for (int i = 0; i < 3; i++) {
    mode = modes[i];
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (void *)&a, sizeof a)) { perror("connect"); return 2; }
    fd = accept(l, NULL, NULL);
    inside = 0;
    pthread_t t; pthread_create(&t, NULL, blocked, NULL); usleep(100000);
    pthread_kill(t, SIGUSR1); while (!inside) ;
    pthread_cancel(t);
    struct timespec dl; clock_gettime(CLOCK_REALTIME, &dl); dl.tv_sec += 20; void *res;
    if (pthread_timedjoin_np(t, &res, &dl)) { printf("%s: still blocked\n", mode); fflush(stdout); _exit(1); }
    printf("%s: %s\n", mode, res == PTHREAD_CANCELED ? "canceled" : "returned");
    close(fd); close(c);
  }
  return 0;
}
