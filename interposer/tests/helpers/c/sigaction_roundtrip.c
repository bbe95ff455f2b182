/* sigaction_roundtrip: what sigaction and signal return as the old action
 * is the program's handler and SA_SIGINFO, and a handler gets the signo
 * and siginfo the sender gave (sigqueue's value, kill's pid). Prints the
 * same lines with or without libshmnet preloaded (decision 48). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t got_sig, got_code, got_val, got_pid;

static void info_handler(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    got_sig = sig;
    got_code = si->si_code;
    got_val = si->si_value.sival_int;
    got_pid = si->si_pid == getpid();
}

static void plain_handler(int sig) { got_sig = sig; }

int main(void)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = info_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR2);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR1, NULL, &old);
    printf("oldact handler %s, SA_SIGINFO %d, SA_RESTART %d, mask USR2 %d\n",
           old.sa_sigaction == info_handler ? "ours" : "other",
           !!(old.sa_flags & SA_SIGINFO), !!(old.sa_flags & SA_RESTART),
           sigismember(&old.sa_mask, SIGUSR2));
    union sigval v = {.sival_int = 42};
    sigqueue(getpid(), SIGUSR1, v);
    printf("sigqueue: sig %d code %d value %d pid %d\n", got_sig, got_code, got_val, got_pid);
    kill(getpid(), SIGUSR1);
    printf("kill: sig %d code %d pid %d\n", got_sig, got_code, got_pid);

    sighandler_t prev = signal(SIGUSR2, plain_handler);
    printf("signal first: %s\n", prev == SIG_DFL ? "SIG_DFL" : "other");
    prev = signal(SIGUSR2, SIG_IGN);
    printf("signal second: %s\n", prev == plain_handler ? "ours" : "other");
    sigaction(SIGUSR2, NULL, &old);
    printf("ignored: %s\n", old.sa_handler == SIG_IGN ? "SIG_IGN" : "other");
    signal(SIGUSR2, plain_handler);
    raise(SIGUSR2);
    printf("plain: sig %d\n", got_sig);

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = plain_handler;
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGHUP, &sa, NULL);
    raise(SIGHUP);
    sigaction(SIGHUP, NULL, &old);
    printf("resethand: sig %d, after %s\n", got_sig, old.sa_handler == SIG_DFL ? "SIG_DFL" : "other");
    printf("ok\n");
    return 0;
}
