/* select() with nfds > FD_SETSIZE and a caller-allocated larger fd set (as
 * Ruby's IO.select and other programs with many fds do; Linux accepts it). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <time.h>
#include <poll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#define BIG 2048
typedef struct { unsigned long b[BIG/64]; } bigset;
static void bset(bigset *s, int fd){ s->b[fd/64] |= 1UL << (fd%64); }
static int bisset(bigset *s, int fd){ return !!(s->b[fd/64] & (1UL << (fd%64))); }
static double now(void){struct timespec t; clock_gettime(CLOCK_MONOTONIC,&t); return t.tv_sec+t.tv_nsec/1e9;}
static int wpipe, s;
static void *later(void *a){ usleep(100000); if (a) send(s,"x",1,0); else write(wpipe,"!",1); return 0; }
int main(void){
  const char *host = getenv("LD_PRELOAD") && getenv("TEST_HOST") ? getenv("TEST_HOST") : "127.0.0.1";
  int l = socket(AF_INET, SOCK_STREAM, 0); int one=1; setsockopt(l,SOL_SOCKET,SO_REUSEADDR,&one,4);
  struct sockaddr_in a = {.sin_family=AF_INET, .sin_port=htons(19613)}; inet_pton(AF_INET, host, &a.sin_addr);
  if (bind(l,(void*)&a,sizeof a)||listen(l,8)) {perror("bind"); return 1;}
  int c = socket(AF_INET, SOCK_STREAM, 0); if (connect(c,(void*)&a,sizeof a)) {perror("connect");return 1;}
  s = accept(l,0,0);
  int pp[2]; pipe(pp); int hi = 1500; dup2(pp[0], hi); wpipe = pp[1];
  for (int round = 0; round < 5; round++) {
    /* 1: connection at a low fd, pipe at fd 1500 becomes readable after 100 ms */
    /* leave a stale doorbell byte on c (poll arms the flag, data rings, recv takes the data only) */
    { pthread_t t2; pthread_create(&t2,0,later,(void*)1); struct pollfd q={c,POLLIN,0}; poll(&q,1,2000); char d[8]; recv(c,d,8,0); pthread_join(t2,0); }
    bigset r; memset(&r,0,sizeof r); bset(&r,c); bset(&r,hi);
    pthread_t th; pthread_create(&th,0,later,0);
    struct timeval tv={2,0}; double t0=now();
    int n = select(hi+1,(fd_set*)&r,0,0,&tv);
    printf("pipe@1500 readable after 100ms: n=%d pipe set=%d took=%.3f\n", n, bisset(&r,hi), now()-t0);
    pthread_join(th,0); char b[8]; read(hi,b,8);
  }
  return 0;
}
