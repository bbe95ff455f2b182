// bad_fds.c: socket calls on fd numbers that are not open (-1, -7, 4000): each says what the
// kernel says (EBADF...), never a library panic's EIO (review udplazy: bind/connect/listen(-1)).
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#define T(name, call) do { errno = 0; long r = (long)(call); printf("%s %ld %s\n", name, r, strerror(errno)); } while (0)
int main(){ struct sockaddr_in a; socklen_t l = sizeof a; int v = 1; char b[4];
 int fds[] = {-1, -7, 4000};
 for (int i = 0; i < 3; i++) { int fd = fds[i]; printf("fd %d\n", fd);
  struct sockaddr_in lo = {.sin_family = AF_INET, .sin_port = htons(9), .sin_addr.s_addr = htonl(0x7f000001)};
  T("bind", bind(fd, (void*)&lo, sizeof lo)); T("connect", connect(fd, (void*)&lo, sizeof lo));
  T("sendto", sendto(fd, "x", 1, 0, (void*)&lo, sizeof lo));
  T("getsockname", getsockname(fd, (void*)&a, &l)); T("getpeername", getpeername(fd, (void*)&a, &l));
  T("setsockopt", setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, sizeof v)); T("getsockopt", getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &l));
  T("shutdown", shutdown(fd, SHUT_RDWR)); T("fcntl", fcntl(fd, F_GETFL)); T("fcntlset", fcntl(fd, F_SETFL, O_NONBLOCK)); T("ioctl", ioctl(fd, FIONREAD, &v));
  T("dup", dup(fd)); T("dup2", dup2(fd, 50)); T("close", close(fd)); T("read", read(fd, b, 1)); T("write", write(fd, b, 1));
  T("send", send(fd, b, 1, 0)); T("recvfrom", recvfrom(fd, b, 1, MSG_DONTWAIT, 0, 0)); T("sendfile", sendfile(fd, 0, 0, 1));
  int ep = epoll_create1(0); struct epoll_event ev = {.events = EPOLLIN}; T("epoll_ctl", epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)); T("epoll_ctl_ep", epoll_ctl(fd, EPOLL_CTL_ADD, 0, &ev)); close(ep);
  struct pollfd p = {fd, POLLIN, 0}; T("poll", poll(&p, 1, 0)); printf("revents %d\n", p.revents);
  T("accept4", accept4(fd, 0, 0, 0)); T("listen", listen(fd, 1)); T("fstat-ish readv", readv(fd, 0, 0));
 }}
