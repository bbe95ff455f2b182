/* A program run without the library (built static: no loader reads
 * LD_PRELOAD) that inherits a listening socket: argv[1] is its fd. It
 * prints "static listens PORT" (getsockname), accepts one connection and
 * echoes it until end of stream. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int fd = atoi(argv[1]);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
        perror("getsockname");
        return 1;
    }
    int port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                         : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    printf("static listens %d\n", port);
    fflush(stdout);
    int c = accept(fd, NULL, NULL);
    if (c < 0) {
        perror("accept");
        return 1;
    }
    char buf[65536];
    ssize_t n;
    while ((n = read(c, buf, sizeof buf)) > 0) {
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(c, buf + off, n - off);
            if (w <= 0) return 1;
            off += w;
        }
    }
    close(c);
    return 0;
}
