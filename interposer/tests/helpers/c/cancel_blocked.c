// cancel_blocked HOST PORT WHAT [async]: a thread blocks in WHAT (accept,
// recv, read, poll, epoll, select, write: a full send buffer) on a loopback
// connection; main cancels it and joins. Prints what the join saw and
// whether the thread's cleanup handler ran. Anything the blocked call
// returns is printed too (a cancelled call never returns).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *what;
static int fd, async_type;
static volatile int cleaned;

static void cleanup(void *a) { (void)a; cleaned = 1; }

static void *blocker(void *arg) {
  (void)arg;
  static char buf[1 << 16];
  if (async_type) pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, NULL);
  pthread_cleanup_push(cleanup, NULL);
  long r = -2;
  if (!strcmp(what, "accept")) r = accept(fd, NULL, NULL);
  else if (!strcmp(what, "recv")) r = recv(fd, buf, 16, 0);
  else if (!strcmp(what, "read")) r = read(fd, buf, 16);
  else if (!strcmp(what, "write")) { for (;;) { r = write(fd, buf, sizeof buf); if (r < 0) break; } }
  else if (!strcmp(what, "poll")) { struct pollfd p = {.fd = fd, .events = POLLIN}; r = poll(&p, 1, -1); }
  else if (!strcmp(what, "epoll")) {
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
    r = epoll_wait(ep, &e, 1, -1);
  } else if (!strcmp(what, "select")) {
    fd_set s; FD_ZERO(&s); FD_SET(fd, &s);
    r = select(fd + 1, &s, NULL, NULL, NULL);
  }
  printf("%s returned %ld (%s)\n", what, r, r < 0 ? strerror(errno) : "ok");
  fflush(stdout);
  pthread_cleanup_pop(0);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 4) return 2;
  what = argv[3];
  async_type = argc > 4 && !strcmp(argv[4], "async");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  inet_pton(AF_INET, argv[1], &a.sin_addr);
  int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 16)) { perror("bind/listen"); return 2; }
  int c = -1;
  if (!strcmp(what, "accept")) fd = l;
  else {
    c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 2; }
    fd = accept(l, NULL, NULL);
    if (fd < 0) { perror("accept"); return 2; }
  }
  pthread_t t;
  pthread_create(&t, NULL, blocker, NULL);
  usleep(200000);
  if (pthread_cancel(t)) { printf("pthread_cancel failed\n"); return 1; }
  void *res;
  int j = pthread_join(t, &res);
  printf("joined: %s, cleanup %s\n", j ? "error" : res == PTHREAD_CANCELED ? "canceled" : "returned",
         cleaned ? "ran" : "not run");
  // The process goes on using its sockets after the cancel.
  if (c >= 0 && write(c, "x", 1) != 1) printf("write after cancel failed: %s\n", strerror(errno));
  close(fd);
  if (c >= 0) close(c);
  if (fd != l) close(l);
  return 0;
}
