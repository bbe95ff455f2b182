/* C stdio on a connection: fdopen + fprintf + fgets, both ends in one
 * program (the parent connects, the child accepts). The client writes
 * LINES lines of varying length with fprintf on one "r+" stream, shuts
 * its side down and reads back with fgets what the server echoed with
 * fputs on a second stream (fdopen of a dup), plus "bye\n" that the
 * server leaves in its buffer for exit() to flush. fileno() and fstat()
 * of the streams must answer as for glibc's own FILE.
 * argv: host port lines. Prints "client SENT GOT same|different". */
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t fnv(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
    return h;
}

static void die(const char *what)
{
    fprintf(stderr, "%s: %s\n", what, strerror(errno));
    _exit(2);
}

static void check_fd(FILE *f, int fd)
{
    struct stat st;
    if (fileno(f) != fd)
        die("fileno");
    if (fstat(fileno(f), &st) != 0 || !S_ISSOCK(st.st_mode))
        die("fstat(fileno) is not a socket");
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &a.sin_addr);
    int lines = atoi(argv[3]);
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1))
        die("listen");
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    alarm(60); /* a hang fails the test, in both processes */
    if (pid == 0) {
        int c = accept(ls, NULL, NULL);
        if (c < 0)
            die("accept");
        FILE *in = fdopen(c, "r");
        FILE *out = fdopen(dup(c), "w");
        if (!in || !out)
            die("fdopen");
        check_fd(in, c);
        char line[512];
        while (fgets(line, sizeof line, in))
            if (fputs(line, out) == EOF)
                die("fputs");
        if (ferror(in))
            die("fgets");
        fclose(in);
        /* Left in the buffer: exit() flushes it, then the fd closes. */
        fprintf(out, "bye\n");
        return 0;
    }
    close(ls);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&a, sizeof a))
        die("connect");
    FILE *f = fdopen(s, "r+");
    if (!f)
        die("fdopen r+");
    check_fd(f, s);
    uint64_t sent = 0xcbf29ce484222325ULL, got = sent;
    size_t nsent = 0, ngot = 0;
    char line[512], body[300];
    unsigned seed = 12345;
    for (int i = 0; i < lines; i++) {
        int len = 1 + (seed = seed * 1103515245 + 12345) % 250;
        for (int j = 0; j < len; j++)
            body[j] = 'a' + (seed >> (j % 16)) % 26;
        body[len] = 0;
        int n = snprintf(line, sizeof line, "%d %s\n", i, body);
        if (fprintf(f, "%d %s\n", i, body) != n)
            die("fprintf");
        sent = fnv(sent, line, n);
        nsent += n;
    }
    sent = fnv(sent, "bye\n", 4);
    nsent += 4;
    /* Output to input on an update stream: a flush between (C11 7.21.5.3). */
    if (fflush(f))
        die("fflush");
    shutdown(s, SHUT_WR);
    while (fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        got = fnv(got, line, n);
        ngot += n;
    }
    if (ferror(f) || !feof(f))
        die("fgets ended without end of file");
    if (fclose(f))
        die("fclose");
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
        die("the server failed");
    printf("client %zu %zu %s\n", nsent, ngot,
           nsent == ngot && sent == got ? "same" : "different");
    return 0;
}
