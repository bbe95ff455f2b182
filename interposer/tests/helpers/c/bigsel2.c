/* A lazy connection at fd 1600 in a caller-allocated large fd set. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <time.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
typedef struct { unsigned long b[2048/64]; } bigset;
static double now(void){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+t.tv_nsec/1e9;}
static int s;
static void *later(void *a){ usleep(100000); send(s,"a",1,0); return 0; }
int main(void){
  const char *host = getenv("LD_PRELOAD") && getenv("TEST_HOST") ? getenv("TEST_HOST") : "127.0.0.1";
  int l = socket(AF_INET, SOCK_STREAM, 0); int one=1; setsockopt(l,SOL_SOCKET,SO_REUSEADDR,&one,4);
  struct sockaddr_in a = {.sin_family=AF_INET, .sin_port=htons(19614)}; inet_pton(AF_INET, host, &a.sin_addr);
  if (bind(l,(void*)&a,sizeof a)||listen(l,8)) {perror("bind"); return 1;}
  int c0 = socket(AF_INET, SOCK_STREAM, 0); if (connect(c0,(void*)&a,sizeof a)) {perror("connect");return 1;}
  s = accept(l,0,0);
  int c = dup2(c0, 1600); close(c0);
  char buf[64]; pthread_t th; pthread_create(&th,0,later,0); recv(c,buf,64,0); pthread_join(th,0); /* lazy now */
  send(s,"hello",5,0); usleep(50000);               /* in the ring, no doorbell */
  bigset r; memset(&r,0,sizeof r); r.b[c/64] |= 1UL<<(c%64);
  struct timeval tv={2,0}; double t0=now(); int n=select(c+1,(fd_set*)&r,0,0,&tv);
  printf("lazy conn at fd 1600, 5 bytes unread: select n=%d took=%.3f\n", n, now()-t0);
  return 0;
}
