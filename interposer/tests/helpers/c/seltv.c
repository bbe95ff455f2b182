/* select() with tv_usec >= 1000000 (Linux normalizes it: {0, 2500000} is
 * 2.5 s) and with a negative tv_sec (Linux: EINVAL); ppoll with tv_nsec
 * out of range (Linux: EINVAL). The set holds an idle emulated connection. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <poll.h>
#include <time.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
static double now(void){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+t.tv_nsec/1e9;}
int main(void){
  const char *host = getenv("LD_PRELOAD") && getenv("TEST_HOST") ? getenv("TEST_HOST") : "127.0.0.1";
  int l = socket(AF_INET, SOCK_STREAM, 0); int one=1; setsockopt(l,SOL_SOCKET,SO_REUSEADDR,&one,4);
  struct sockaddr_in a = {.sin_family=AF_INET, .sin_port=htons(19615)}; inet_pton(AF_INET, host, &a.sin_addr);
  if (bind(l,(void*)&a,sizeof a)||listen(l,8)) {perror("bind"); return 1;}
  int c = socket(AF_INET, SOCK_STREAM, 0); if (connect(c,(void*)&a,sizeof a)) {perror("connect");return 1;}
  int s = accept(l,0,0); (void)s;
  fd_set r; FD_ZERO(&r); FD_SET(c,&r); struct timeval tv={0,1200000};
  double t0=now(); int n=select(c+1,&r,0,0,&tv);
  printf("select {0,1200000}: n=%d took=%.3f\n", n, now()-t0);
  FD_ZERO(&r); FD_SET(c,&r); tv=(struct timeval){-1,0}; t0=now(); n=select(c+1,&r,0,0,&tv);
  printf("select {-1,0}: n=%d errno=%s took=%.3f\n", n, n<0?strerror(errno):"-", now()-t0);
  struct pollfd p={c,POLLIN,0}; struct timespec ts={0,1500000000L}; t0=now(); n=ppoll(&p,1,&ts,0);
  printf("ppoll {0,1500000000}: n=%d errno=%s took=%.3f\n", n, n<0?strerror(errno):"-", now()-t0);
  return 0;
}
