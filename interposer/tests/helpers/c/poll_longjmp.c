/* poll_longjmp HOST PORT MODE: siglongjmp (from a SIGALRM handler) out of
 * poll({s, events}) on an accepted socket whose peer closed (MODE 0: events
 * 0), is idle (1: POLLIN), or is idle with events 0 (2); then pollfd.fd is
 * read back and the program connects and accepts again. From the review of
 * session 32 (s32/review-mainfix ljmp.c): the library left pollfd.fd
 * negated (MODE 0), and the thread's library off (MODE 2: the second
 * connect went to kernel TCP). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
static sigjmp_buf jb; static void onalrm(int s){siglongjmp(jb,1);}
int main(int argc,char**argv){
  setvbuf(stdout,0,_IONBF,0);
  struct sockaddr_in sa={0}; sa.sin_family=AF_INET;sa.sin_port=htons(atoi(argv[2]));inet_pton(AF_INET,argv[1],&sa.sin_addr);
  int ev=atoi(argv[3]); int keep=0; if(ev==2){ev=0;keep=1;}
  int l=socket(AF_INET,SOCK_STREAM,0);int one=1;setsockopt(l,SOL_SOCKET,SO_REUSEADDR,&one,4);bind(l,(void*)&sa,sizeof sa);listen(l,8);
  int c=socket(AF_INET,SOCK_STREAM,0); if(connect(c,(void*)&sa,sizeof sa))perror("connect1"); int s=accept(l,0,0); if(ev==0&&!keep){close(c); usleep(100000);}
  struct pollfd p={s,ev,0}; signal(SIGALRM,onalrm);
  if(!sigsetjmp(jb,1)){ ualarm(200000,0); int n=poll(&p,1,-1); printf("poll returned %d rev=%#x\n",n,p.revents);}
  else printf("longjmp'd out; pollfd.fd %s\n",p.fd==s?"unchanged":"CHANGED");
  alarm(3); signal(SIGALRM,SIG_DFL);
  int c2=socket(AF_INET,SOCK_STREAM,0); if(connect(c2,(void*)&sa,sizeof sa))perror("connect2 after longjmp"); else printf("connect2 ok\n");
  int s2=accept(l,0,0); printf("accept2 %s\n",s2>=0?"ok":"failed");
  return 0;
}
