// udp_recv_longjmp.c: tftp's timeout. siglongjmp out of a SIGALRM handler (20 ms) while a
// blocking recvfrom waits for an answer the echo process sends after 100 ms; then the late
// answer must still be read, and 5 plain round trips (sendto, recvfrom) must work. Before,
// the UDP receive's sleep ran inside the library and every later call of the thread on the
// socket was refused as re-entry (EIO: "tftp: sendto: Input/output error"; sweep37).
// usage: ./udp_recv_longjmp HOST PORT ; prints "jumps N, late answers read N, round trips after N"
#include <arpa/inet.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
static sigjmp_buf env;
static void h(int s) { (void)s; siglongjmp(env, 1); }
int main(int argc, char **argv) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  inet_pton(AF_INET, argv[1], &a.sin_addr);
  int e = socket(AF_INET, SOCK_DGRAM, 0);
  if (bind(e, (void *)&a, sizeof a)) { perror("bind"); return 1; }
  pid_t c = fork();
  if (c == 0) {
    char b; struct sockaddr_in from; socklen_t fl;
    for (;;) {
      fl = sizeof from;
      if (recvfrom(e, &b, 1, 0, (void *)&from, &fl) != 1) _exit(1);
      if (b == 'q') _exit(0);
      if (b == 's') usleep(100000);
      sendto(e, &b, 1, 0, (void *)&from, fl);
    }
  }
  close(e);
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sigaction sa = {.sa_handler = h}; sigaction(SIGALRM, &sa, 0);
  int jumps = 0, late = 0, after = 0; char b;
  for (int i = 0; i < 5; i++) {
    b = 's';
    if (sendto(s, &b, 1, 0, (void *)&a, sizeof a) != 1) { perror("sendto"); break; }
    if (sigsetjmp(env, 1) == 0) {
      struct itimerval it = {{0, 0}, {0, 20000}}; setitimer(ITIMER_REAL, &it, 0);
      recvfrom(s, &b, 1, 0, NULL, NULL);
      struct itimerval z = {0}; setitimer(ITIMER_REAL, &z, 0);
    } else {
      jumps++;
      struct timeval tv = {2, 0}; setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      { int r = recvfrom(s, &b, 1, 0, NULL, NULL); if (r == 1) late++; else if (getenv("V")) perror("late recvfrom"); }
      struct timeval z0 = {0, 0}; setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &z0, sizeof z0);
    }
  }
  struct timeval tv = {2, 0}; setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  for (int i = 0; i < 5; i++) {
    b = 'x';
    if (sendto(s, &b, 1, 0, (void *)&a, sizeof a) != 1) { if (getenv("V")) perror("sendto after"); continue; }
    int r = recvfrom(s, &b, 1, 0, NULL, NULL);
    if (r == 1 && b == 'x') after++; else if (getenv("V")) fprintf(stderr, "after: r=%d b=%c %m\n", r, b);
  }
  b = 'q'; sendto(s, &b, 1, 0, (void *)&a, sizeof a);
  printf("jumps %d, late answers read %d, round trips after %d\n", jumps, late, after);
  close(s); waitpid(c, 0, 0);
  return 0;
}
