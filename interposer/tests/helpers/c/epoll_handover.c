/* A blocking reader thread asleep in recv (a lazy "taker") when the fd is
 * added to an epoll set; after it reads, new data must make epoll_wait
 * report EPOLLIN. (Its sleep took the doorbell byte and the producer's
 * ring lowered the flag; nothing raised it again, so the next write did not
 * ring: epoll_wait slept with data in the ring.)
 * usage: epoll_handover HOST PORT [early]   (early: ADD before the read) */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
static int cfd;
static void *reader(void *a) { char b[64]; *(ssize_t *)a = recv(cfd, b, sizeof b, 0); return NULL; }
int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  struct sockaddr_in A = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  inet_pton(AF_INET, argv[1], &A.sin_addr);
  int L = socket(AF_INET, SOCK_STREAM, 0);
  if (bind(L, (void *)&A, sizeof A) || listen(L, 4)) { perror("listen"); return 3; }
  cfd = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(cfd, (void *)&A, sizeof A)) { perror("connect"); return 3; }
  int sfd = accept(L, NULL, NULL);
  int early = argc > 3;
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = cfd}, out;
  if (early) epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev);
  ssize_t n1; pthread_t t; pthread_create(&t, NULL, reader, &n1);
  usleep(100000); /* the reader is asleep in recv */
  if (!early) epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev);
  send(sfd, "de", 2, 0);
  pthread_join(t, NULL);
  printf("reader got %zd; epoll_wait (drained) = %d\n", n1, epoll_wait(ep, &out, 1, 100));
  send(sfd, "f", 1, 0);
  int r = epoll_wait(ep, &out, 1, 2000);
  char b[8]; ssize_t n = recv(cfd, b, sizeof b, MSG_DONTWAIT);
  printf("after a new send: epoll_wait(2000 ms) = %d, recv(MSG_DONTWAIT) = %zd\n", r, n);
  return r == 1 ? 0 : 1;
}
