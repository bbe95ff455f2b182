// signal_variants.c: glibc's other ways in: __sysv_signal (what signal is
// with -std=c99), ssignal, sigset (SIG_HOLD), signal(SIG_ERR). Each
// installs a handler, raises the signal and prints what ran, the old
// dispositions returned and the action and mask after (the kernel's
// output is the reference). Review of decision 48, sem.c.
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

extern __sighandler_t __sysv_signal(int, __sighandler_t);
extern __sighandler_t ssignal(int, __sighandler_t);

static volatile int ran;
static void h(int s) { (void)s; ran++; }
static void h2(int s) { (void)s; ran += 10; }

static const char *name(__sighandler_t f) {
    if (f == SIG_DFL) return "DFL";
    if (f == SIG_IGN) return "IGN";
    if (f == SIG_ERR) return "ERR";
    if (f == SIG_HOLD) return "HOLD";
    if (f == h) return "h";
    if (f == h2) return "h2";
    return "other";
}

static void now(const char *what, int sig) {
    struct sigaction sa;
    sigaction(sig, 0, &sa);
    sigset_t m;
    pthread_sigmask(SIG_BLOCK, 0, &m);
    printf("%s: ran %d, now %s, restart %d, resethand %d, blocked %d\n", what, ran, name(sa.sa_handler),
           !!(sa.sa_flags & SA_RESTART), !!(sa.sa_flags & SA_RESETHAND), sigismember(&m, sig));
}

int main(void) {
    __sighandler_t o;
    ran = 0;
    o = __sysv_signal(SIGUSR1, h);
    printf("__sysv_signal old %s\n", name(o));
    raise(SIGUSR1);
    now("__sysv_signal", SIGUSR1);

    ran = 0;
    o = ssignal(SIGUSR2, h);
    printf("ssignal old %s\n", name(o));
    o = ssignal(SIGUSR2, h2);
    printf("ssignal old %s\n", name(o));
    raise(SIGUSR2);
    now("ssignal", SIGUSR2);

    ran = 0;
    o = sigset(SIGHUP, h);
    printf("sigset old %s\n", name(o));
    o = sigset(SIGHUP, SIG_HOLD);
    printf("sigset hold old %s\n", name(o));
    o = sigset(SIGHUP, SIG_HOLD);
    printf("sigset hold again old %s\n", name(o));
    raise(SIGHUP);
    now("sigset held", SIGHUP);
    o = sigset(SIGHUP, h2);
    printf("sigset h2 old %s\n", name(o));
    now("sigset released", SIGHUP);

    errno = 0;
    o = signal(SIGWINCH, SIG_ERR);
    printf("signal(SIG_ERR) returns %s errno %d\n", name(o), errno);
    errno = 0;
    o = sigset(SIGWINCH, SIG_ERR);
    printf("sigset(SIG_ERR) returns %s errno %d\n", name(o), errno);
    errno = 0;
    o = __sysv_signal(SIGWINCH, SIG_ERR);
    printf("__sysv_signal(SIG_ERR) returns %s errno %d\n", name(o), errno);
    now("after SIG_ERR", SIGWINCH);
    return 0;
}
