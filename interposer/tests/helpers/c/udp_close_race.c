// udp_close_race.c N: one thread's first sendto on a new UDP socket (a conversion, decision 64:
// the destination is a receiver of this process, carried) races another thread's close of the
// socket and open("/dev/null"), which the kernel may give the same number. The opened file must
// stay /dev/null (review udplazy #3: the conversion's epoll instance replaced it, 42 of 2000).
// prints "replaced R of N"
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
static int fd;
static struct sockaddr_in to;
static void *snd(void *p) { (void)p; sendto(fd, "x", 1, 0, (void *)&to, sizeof to); return 0; }
static void *cls(void *p) {
  for (volatile int k = 0; k < (rand() % 20000); k++) {}
  close(fd);
  *(int *)p = open("/dev/null", O_RDONLY);
  return 0;
}
int main(int argc, char **argv) {
  int n = atoi(argv[1]), bad = 0;
  int r = socket(AF_INET, SOCK_DGRAM, 0);
  to.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  socklen_t l = sizeof to;
  if (bind(r, (void *)&to, sizeof to) || getsockname(r, (void *)&to, &l)) { perror("bind"); return 1; }
  for (int i = 0; i < n; i++) {
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    int nfd = -1;
    pthread_t a, b;
    pthread_create(&a, 0, snd, 0);
    pthread_create(&b, 0, cls, &nfd);
    pthread_join(a, 0);
    pthread_join(b, 0);
    char link[128], path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", nfd);
    ssize_t k = readlink(path, link, sizeof link - 1);
    link[k < 0 ? 0 : k] = 0;
    if (strcmp(link, "/dev/null")) bad++;
    close(nfd);
    char b2[8];
    while (recv(r, b2, sizeof b2, MSG_DONTWAIT) > 0) {}
  }
  printf("replaced %d of %d\n", bad, n);
  return 0;
}
