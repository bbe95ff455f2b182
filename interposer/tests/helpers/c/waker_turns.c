/* waker_turns HOST SECONDS: a forked child waits SECONDS on an epoll set it
 * shares with its parent, holding no connection of the child's, while the
 * parent's waker (decision 44) stays in the set: the parent adds a
 * connection with data no doorbell announced (which puts its waker in) and
 * then never waits on the set. Each of the child's turns finds only the
 * parent's waker and pauses 1 ms; the wait runs on a thread with a 128 KiB
 * stack, which a frame per turn would overflow (SIGSEGV) within a second.
 * The kernel's answer is 0 (a timeout): the data was read past the set.
 * Prints the child's epoll_wait result and how it ended. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int ep, secs;

static void *waiter(void *arg) {
  (void)arg;
  struct epoll_event out[4];
  int n = epoll_wait(ep, out, 4, secs * 1000);
  printf("child epoll_wait %d%s%s\n", n, n < 0 ? " " : "", n < 0 ? strerror(errno) : "");
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, 0, _IONBF, 0);
  secs = argc > 2 ? atoi(argv[2]) : 2;
  struct sockaddr_in sa = {.sin_family = AF_INET};
  inet_pton(AF_INET, argv[1], &sa.sin_addr);
  int l = socket(AF_INET, SOCK_STREAM, 0);
  if (bind(l, (void *)&sa, sizeof sa) || listen(l, 8)) { perror("listen"); return 1; }
  socklen_t sl = sizeof sa;
  getsockname(l, (void *)&sa, &sl);
  ep = epoll_create1(EPOLL_CLOEXEC);
  int c = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(c, (void *)&sa, sizeof sa)) { perror("connect"); return 1; }
  int a = accept(l, 0, 0);
  char buf[16];
  /* The connection is read through a set of the parent's own first, whose
   * one waiter leaves its flag down after the read (decision 41): the
   * next data rings no doorbell. Moved to the shared set after the fork,
   * that data is unannounced: the ADD puts the parent's waker in. (The
   * parent's waker and its key are made here, before the fork: the
   * child knows them.) */
  int s1 = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event e = {.events = EPOLLIN, .data.u64 = 1}, o[4];
  epoll_ctl(s1, EPOLL_CTL_ADD, a, &e);
  send(c, "a", 1, 0);
  epoll_wait(s1, o, 4, 1000);
  recv(a, buf, sizeof buf, 0);
  epoll_wait(s1, o, 4, 10);
  send(c, "hello", 5, 0);
  usleep(20000);
  epoll_ctl(s1, EPOLL_CTL_DEL, a, 0);
  int sync[2];
  if (pipe(sync)) return 1;
  pid_t child = fork();
  if (child == 0) {
    char b;
    read(sync[0], &b, 1); /* the parent's connection is in the set */
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, 128 * 1024);
    pthread_t t;
    if (pthread_create(&t, &at, waiter, 0)) { perror("pthread_create"); _exit(1); }
    pthread_join(t, 0);
    _exit(0);
  }
  if (epoll_ctl(ep, EPOLL_CTL_ADD, a, &e)) perror("epoll_ctl");
  /* Read here, not through the set: nothing is left for the child's wait
   * to report, and the waker stays. */
  printf("parent read %zd\n", recv(a, buf, sizeof buf, 0));
  write(sync[1], "!", 1);
  int st;
  waitpid(child, &st, 0);
  if (WIFSIGNALED(st)) printf("child killed by signal %d (%s)\n", WTERMSIG(st), strsignal(WTERMSIG(st)));
  else printf("child exit %d\n", WEXITSTATUS(st));
  /* The parent's own wait takes its waker out and reports the data. */
  struct epoll_event out[4];
  send(c, "!", 1, 0);
  int n = epoll_wait(ep, out, 4, 1000);
  printf("parent epoll_wait %d data=%llu\n", n, n > 0 ? (unsigned long long)out[0].data.u64 : 0ULL);
  return 0;
}
