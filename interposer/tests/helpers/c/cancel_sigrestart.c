// cancel_sigrestart HOST PORT MODE: a thread blocks in read() on a TCP connection;
// SIGALRM (handler with SA_RESTART) arrives at 0.3 s, the peer writes at 0.8 s.
// The kernel restarts the read: "read returned 1". Modes:
//  mixed    : also a SIGUSR1 handler WITHOUT SA_RESTART is installed (never sent)
//  disabled : first a blocking read with cancellation enabled (it sleeps, then
//             gets a byte), then the thread disables cancellation and blocks again
//  stopcont : SIGUSR1 handler without SA_RESTART installed; the process gets
//             SIGSTOP then SIGCONT (no SIGALRM) during the read
//  plain    : only SIGALRM with SA_RESTART
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
static int fd, c; static const char *mode; static pthread_t reader;
static void h(int s) { (void)s; }
static void *rd(void *a) {
  (void)a; char b[16];
  if (!strcmp(mode, "disabled")) {
    long r = read(fd, b, 1); // sleeps: the peer writes at 0.2 s
    printf("first read (cancel enabled) returned %ld\n", r);
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
  }
  long r = read(fd, b, sizeof b);
  if (r < 0) printf("read: %s\n", strerror(errno)); else printf("read returned %ld\n", r);
  fflush(stdout);
  return NULL;
}
static void *timer(void *a) { (void)a;
  if (!strcmp(mode, "disabled")) { usleep(200000); write(c, "a", 1); }
  usleep(300000);
  if (!strcmp(mode, "stopcont")) { kill(getpid(), SIGSTOP); /* resumed by the script */ }
  else pthread_kill(reader, SIGALRM);
  usleep(500000); write(c, "b", 1); return NULL; }
int main(int argc, char **argv) {
  mode = argv[3];
  struct sigaction sa = {0}; sa.sa_handler = h; sa.sa_flags = SA_RESTART;
  sigaction(SIGALRM, &sa, NULL);
  if (strcmp(mode, "plain") && strcmp(mode, "disabled")) { sa.sa_flags = 0; sigaction(SIGUSR1, &sa, NULL); }
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  inet_pton(AF_INET, argv[1], &a.sin_addr);
  int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(l, (void *)&a, sizeof a) || listen(l, 4)) { perror("bind"); return 2; }
  c = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(c, (void *)&a, sizeof a)) { perror("connect"); return 2; }
  fd = accept(l, NULL, NULL);
  pthread_t t; pthread_create(&reader, NULL, rd, NULL); pthread_create(&t, NULL, timer, NULL);
  pthread_join(reader, NULL); pthread_join(t, NULL); return 0;
}
