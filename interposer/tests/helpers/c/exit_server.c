// Server: accept, read the request, write a reply, exit without close()
// (as many small servers/CGI-style workers do). Client: send request, read
// the reply, then read again: kernel TCP gives EOF (0).
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    (void)argc, (void)argv;
    const char *ip = getenv("TEST_HOST");
    if (!ip) { fprintf(stderr, "exit_server: TEST_HOST names the address\n"); return 2; }
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, ip, &a.sin_addr);
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (void *)&a, sizeof a) || listen(ls, 4)) { perror("bind/listen"); return 2; }
    socklen_t l = sizeof a; getsockname(ls, (void *)&a, &l);
    if (fork() == 0) {
        int c = accept(ls, 0, 0);
        char b[64]; ssize_t n = read(c, b, sizeof b);
        write(c, "reply", 5);
        (void)n; _exit(0); // or exit(0): no close
    }
    close(ls);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (void *)&a, sizeof a)) { perror("connect"); return 2; }
    write(c, "request", 7);
    char b[64]; ssize_t n = read(c, b, sizeof b);
    printf("reply: %zd\n", n);
    wait(0);
    n = read(c, b, sizeof b);
    printf("after server exit: read=%zd errno=%s\n", n, n < 0 ? strerror(errno) : "-");
    return 0;
}
