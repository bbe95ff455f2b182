/* freopen of stdout while fd 1 is a connection: bytes printed before go
 * to the connection (freopen flushes first), bytes after to the file, the
 * connection stays usable through another fd, and the stream returned is
 * `stdout`. argv: host port file. Prints "freopen ok" (on the fd stdout
 * had at the start) or the failure. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define SENT "before-freopen;after;"

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1))
        return 3;
    pid_t pid = fork();
    alarm(60);
    if (pid == 0) {
        int c = accept(ls, NULL, NULL);
        char b[200];
        int t = 0, n;
        while ((n = read(c, b + t, sizeof b - 1 - t)) > 0)
            t += n;
        b[t] = 0;
        _exit(n == 0 && strcmp(b, SENT) == 0 ? 0 : 1);
    }
    int out = dup(1);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&a, sizeof a))
        return 4;
    int keep = dup(s);
    dup2(s, 1);
    close(s);
    printf("before-freopen;");
    FILE *f = freopen(argv[3], "w", stdout);
    printf("into-the-file\n");
    int same = f == stdout && fileno(stdout) == 1;
    if (fclose(stdout))
        same = 0;
    if (write(keep, "after;", 6) != 6)
        same = 0;
    close(keep);
    int status;
    waitpid(pid, &status, 0);
    FILE *file = fopen(argv[3], "r");
    char line[100] = "";
    if (!file || !fgets(line, sizeof line, file))
        same = 0;
    dprintf(out, "%s\n",
            !same ? "freopen returned another stream, or a call failed"
            : !WIFEXITED(status) || WEXITSTATUS(status) ? "the peer read other bytes"
            : strcmp(line, "into-the-file\n") ? "the file has other bytes"
            : "freopen ok");
    return 0;
}
