// recv_longjmp.c: siglongjmp out of a SIGALRM handler (20 ms) while a blocking recv waits for a reply the
// server sends after 100 ms; then the late reply must still be read, and 5 plain round trips must work
// (review of decision 45: every later recv failed with EIO, on the base too).
// usage: ./recv_longjmp HOST PORT ; prints "jumps N, late replies read N, round trips after N"
#include <arpa/inet.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
static sigjmp_buf env;
static void h(int s) { (void)s; siglongjmp(env, 1); }
int main(int argc, char **argv) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  inet_pton(AF_INET, argv[1], &a.sin_addr);
  int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(l, (void *)&a, sizeof a) || listen(l, 1)) { perror("bind"); return 1; }
  pid_t c = fork();
  if (c == 0) { int s = accept(l, 0, 0); char b; while (read(s, &b, 1) == 1) { if (b == 's') usleep(100000); write(s, &b, 1); } _exit(0); }
  close(l);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(s, (void *)&a, sizeof a)) { perror("connect"); return 1; }
  struct sigaction sa = {.sa_handler = h}; sigaction(SIGALRM, &sa, 0);
  int jumps = 0, late = 0, after = 0; char b;
  for (int i = 0; i < 5; i++) {
    b = 's'; write(s, &b, 1);
    if (sigsetjmp(env, 1) == 0) {
      struct itimerval it = {{0, 0}, {0, 20000}}; setitimer(ITIMER_REAL, &it, 0);
      recv(s, &b, 1, 0);
      struct itimerval z = {0}; setitimer(ITIMER_REAL, &z, 0);
    } else {
      jumps++;
      struct timeval tv = {2, 0}; setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      { int r = recv(s, &b, 1, 0); if (r == 1) late++; else if (getenv("V")) perror("late recv"); }
      struct timeval z0 = {0, 0}; setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &z0, sizeof z0);
    }
  }
  struct timeval tv = {2, 0}; setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  for (int i = 0; i < 5; i++) { b = 0x78; write(s, &b, 1); int r = recv(s, &b, 1, 0); if (r == 1 && b == 0x78) after++; else if (getenv("V")) fprintf(stderr, "after: r=%d b=%c %m\n", r, b); }
  sigset_t m; sigprocmask(SIG_BLOCK, NULL, &m);
  printf("jumps %d, late replies read %d, round trips after %d, SIGALRM blocked after: %d\n", jumps, late, after, sigismember(&m, SIGALRM));
  close(s); waitpid(c, 0, 0);
  return 0;
}
