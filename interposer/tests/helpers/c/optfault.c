/* getsockopt with the buffers a program may get wrong, on a connected TCP
 * socket pair on HOST:PORT (kernel TCP or, preloaded, emulated): a null
 * value with length 0 is fine; a bad value or length pointer is EFAULT,
 * never a fault in the program. Prints one line per case. */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void segv(int s) { (void)s; write(1, "SIGSEGV\n", 8); _exit(3); }

static void show(const char *what, int r) {
    printf("%s %s\n", what, r == 0 ? "0" : strerror(errno));
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (bind(l, (void *)&a, sizeof a) || listen(l, 8)) { perror("listen"); return 1; }
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (void *)&a, sizeof a)) { perror("connect"); return 1; }
    int s = accept(l, 0, 0);
    signal(SIGSEGV, segv);
    socklen_t zero = 0, four = 4;
    int v;
    show("null-value-len-0", getsockopt(s, SOL_SOCKET, SO_ERROR, NULL, &zero));
    show("bad-value", getsockopt(s, SOL_SOCKET, SO_TYPE, (void *)8, &four));
    show("bad-len", getsockopt(s, SOL_SOCKET, SO_TYPE, &v, (socklen_t *)8));
    show("null-len", getsockopt(s, SOL_SOCKET, SO_TYPE, &v, NULL));
    return 0;
}
