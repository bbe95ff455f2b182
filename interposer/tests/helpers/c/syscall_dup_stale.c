/* A connection's fd closed past the library (a raw system call
 * instruction) leaves a stale entry; syscall(SYS_dup, pipe) then returns
 * that number, which must be the pipe (the stale entry released), not the
 * old connection. argv: HOST PORT. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static long raw_close(long fd) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(SYS_close), "D"(fd) : "rcx", "r11", "memory");
    return r;
}

int main(int argc, char **argv) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &sa.sin_addr);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(l, (void *)&sa, sizeof sa) || listen(l, 4)) { perror("listen"); return 1; }
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (void *)&sa, sizeof sa)) { perror("connect"); return 1; }
    int a = accept(l, NULL, NULL);
    int p[2];
    pipe(p);
    raw_close(c); /* past the library */
    int n = syscall(SYS_dup, p[1]);
    printf("connection fd %d closed raw; syscall(SYS_dup, pipe) = %d\n", c, n);
    ssize_t w = write(n, "hello", 5);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    char buf[16] = {0};
    ssize_t r = read(p[0], buf, sizeof buf);
    fcntl(a, F_SETFL, O_NONBLOCK);
    char buf2[16] = {0};
    ssize_t r2 = recv(a, buf2, sizeof buf2, 0);
    printf("write(%d) = %zd; pipe got %zd '%s'; the old connection's peer got %zd '%s'\n", n, w, r,
           r > 0 ? buf : "", r2, r2 > 0 ? buf2 : "");
    return 0;
}
