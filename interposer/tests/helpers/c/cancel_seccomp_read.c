// cancel_seccomp_read HOST PORT: the main thread installs a seccomp filter (prctl) that
// kills the process on gettid (everything else allowed), then blocks in read()
// on a TCP connection. A thread made before sends it SIGALRM (SA_RESTART handler)
// at 0.3 s and writes a byte at 0.6 s. Kernel: "read returned 1".
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
static int c; static pthread_t mainth;
static void h(int s) { (void)s; }
static void *timer(void *a) { (void)a; usleep(300000); pthread_kill(mainth, SIGALRM); usleep(300000); write(c, "x", 1); return NULL; }
int main(int argc, char **argv) {
  struct sigaction sa = {0}; sa.sa_handler = h; sa.sa_flags = SA_RESTART; sigaction(SIGALRM, &sa, NULL);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  inet_pton(AF_INET, argv[1], &a.sin_addr);
  int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(l, (void *)&a, sizeof a) || listen(l, 4)) { perror("bind"); return 2; }
  c = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(c, (void *)&a, sizeof a)) { perror("connect"); return 2; }
  int fd = accept(l, NULL, NULL);
  struct sock_filter f[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_gettid, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {.len = 4, .filter = f};
  mainth = pthread_self();
  pthread_t t; pthread_create(&t, NULL, timer, NULL);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) { perror("prctl"); return 2; }
  char b[4]; long r = read(fd, b, 1);
  printf("read returned %ld\n", r);
  pthread_join(t, NULL);
  return 0;
}
