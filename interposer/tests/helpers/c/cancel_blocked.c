// cancel_blocked HOST PORT WHAT [async|disabled]: a thread blocks in WHAT
// (accept, recv, read, poll, epoll, select, write: a full send buffer;
// udp: recv on a bound UDP socket) on a loopback connection; main cancels
// it and joins. Prints what the join saw and whether the thread's cleanup
// handler ran. Anything the blocked call returns is printed too (a
// cancelled call never returns). "disabled": the thread disables
// cancellation first; main then wakes the call (a connection, a byte, a
// datagram), and the thread cancels itself at pthread_testcancel once it
// enables it again.
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
static int fd, async_type, disabled;
static volatile int cleaned, woken;

static void cleanup(void *a) { (void)a; cleaned = 1; }

static void *blocker(void *arg) {
  (void)arg;
  static char buf[1 << 16];
  int old = PTHREAD_CANCEL_ENABLE;
  if (async_type) pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, NULL);
  if (disabled) pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
  pthread_cleanup_push(cleanup, NULL);
  long r = -2;
  if (!strcmp(what, "accept")) r = accept(fd, NULL, NULL);
  else if (!strcmp(what, "recv") || !strcmp(what, "udp")) r = recv(fd, buf, 16, 0);
  else if (!strcmp(what, "read")) r = read(fd, buf, 16);
  else if (!strcmp(what, "write")) { for (;;) { r = write(fd, buf, sizeof buf); if (r < 0 || woken) break; } }
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
  printf("%s returned %s\n", what, r >= 0 ? "a value" : strerror(errno));
  fflush(stdout);
  if (disabled) {
    pthread_setcancelstate(old, NULL);
    pthread_testcancel();
  }
  pthread_cleanup_pop(0);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 4) return 2;
  what = argv[3];
  async_type = argc > 4 && !strcmp(argv[4], "async");
  disabled = argc > 4 && !strcmp(argv[4], "disabled");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  inet_pton(AF_INET, argv[1], &a.sin_addr);
  int udp = !strcmp(what, "udp");
  int l = socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(l, (struct sockaddr *)&a, sizeof a) || (!udp && listen(l, 16))) { perror("bind/listen"); return 2; }
  int c = -1;
  if (udp) {
    // One datagram there and taken, so the socket is set up.
    c = socket(AF_INET, SOCK_DGRAM, 0);
    if (connect(c, (struct sockaddr *)&a, sizeof a) || send(c, "x", 1, 0) != 1) { perror("udp"); return 2; }
    char b[4];
    if (recv(l, b, sizeof b, 0) != 1) { perror("udp recv"); return 2; }
    fd = l;
  } else if (!strcmp(what, "accept")) fd = l;
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
  if (disabled) {
    // Still blocked; then woken by what it waits for.
    usleep(200000);
    printf("still blocked after pthread_cancel\n");
    fflush(stdout);
    woken = 1;
    static char sink[1 << 16];
    if (!strcmp(what, "accept")) {
      c = socket(AF_INET, SOCK_STREAM, 0);
      connect(c, (struct sockaddr *)&a, sizeof a);
    } else if (!strcmp(what, "write")) {
      while (recv(c, sink, sizeof sink, MSG_DONTWAIT) > 0) {}
    } else if (write(c, "y", 1) != 1) printf("wake-up write failed: %s\n", strerror(errno));
  }
  void *res;
  int j = pthread_join(t, &res);
  printf("joined: %s, cleanup %s\n", j ? "error" : res == PTHREAD_CANCELED ? "canceled" : "returned",
         cleaned ? "ran" : "not run");
  // The process goes on using its sockets after the cancel.
  if (c >= 0 && !disabled && write(c, "x", 1) != 1) printf("write after cancel failed: %s\n", strerror(errno));
  close(fd);
  if (c >= 0) close(c);
  if (fd != l) close(l);
  return 0;
}
