// sigaction_fork.c N: one thread calls sigaction in a loop while the main
// thread forks N children; each child calls sigaction once and exits. The
// parent waits for each (no time limit: the test's harness is the hang
// check). A child dies with its parent (PR_SET_PDEATHSIG), so one that
// hung is not left behind when the harness kills the parent.
// Prints "forks N, children exited N".
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static void h1(int s) { (void)s; }
static volatile int stop;

static void *hammer(void *p) {
    (void)p;
    struct sigaction sa = {.sa_handler = h1};
    while (!stop) sigaction(SIGUSR2, &sa, NULL);
    return NULL;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 200, exited = 0, st;
    pthread_t t;
    pthread_create(&t, 0, hammer, 0);
    for (int i = 0; i < n; i++) {
        pid_t c = fork();
        if (c == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            struct sigaction s2 = {.sa_handler = h1};
            sigaction(SIGUSR1, &s2, NULL);
            _exit(0);
        }
        if (c > 0 && waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0) exited++;
    }
    stop = 1;
    pthread_join(t, 0);
    printf("forks %d, children exited %d\n", n, exited);
    return 0;
}
