// A signal handler closes connection Y while the thread is blocked in recv() on connection X
// (inside the library). The server waits for EOF on Y, then answers on X.
// Kernel TCP: handler's close sends FIN, server answers, recv returns 2 after ~1 s.
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <time.h>
static int Y;
static void on_alarm(int s) { (void)s; close(Y); }
int main(int argc, char **argv) {
  (void)argc, (void)argv;
  const char *ip = getenv("TEST_HOST"), *port = getenv("TEST_PORT");
  if (!ip || !port) { fprintf(stderr, "sigclose: TEST_HOST and TEST_PORT name the address\n"); return 2; }
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(port))};
  inet_pton(AF_INET, ip, &a.sin_addr);
  int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(ls, (void *)&a, sizeof a) || listen(ls, 8)) { perror("bind/listen"); return 1; }
  pid_t pid = fork();
  if (pid == 0) {
    int x = accept(ls, 0, 0), y = accept(ls, 0, 0);
    char b[16];
    while (recv(y, b, sizeof b, 0) > 0) {}
    fprintf(stderr, "server: EOF on Y, answering on X\n");
    send(x, "ok", 2, 0);
    _exit(0);
  }
  close(ls);
  int x = socket(AF_INET, SOCK_STREAM, 0); Y = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(x, (void *)&a, sizeof a) || connect(Y, (void *)&a, sizeof a)) { perror("connect"); return 1; }
  struct sigaction sa; memset(&sa, 0, sizeof sa); sa.sa_handler = on_alarm; sa.sa_flags = SA_RESTART;
  sigaction(SIGALRM, &sa, 0);
  alarm(1);
  struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
  char b[16];
  ssize_t n = recv(x, b, sizeof b, 0);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  printf("client: recv on X returned %zd after %.1f s\n", n, (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
  kill(pid, SIGKILL); waitpid(pid, 0, 0);
  return 0;
}
