/* sigaction_raw_restore: a handler read back with the raw rt_sigaction (what
 * the kernel holds: under the library, its trampoline) and put back with
 * sigaction still runs the program's handler once (sweep s34 #1: the
 * trampoline was recorded as the handler and called itself until the
 * stack ran out). Prints "ran 1". */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
struct ksa { void *h; unsigned long flags; void *restorer; unsigned long mask; };
static volatile int ran;
static void h1(int s) { (void)s; ran++; }
int main(void) {
    signal(SIGUSR1, h1);
    struct ksa k; memset(&k, 0, sizeof k);
    syscall(SYS_rt_sigaction, SIGUSR1, NULL, &k, 8);   /* what the kernel holds */
    signal(SIGUSR1, SIG_IGN);
    struct sigaction sa; memset(&sa, 0, sizeof sa);
    sa.sa_handler = (void (*)(int))k.h; sa.sa_flags = (int)(k.flags & (SA_SIGINFO|SA_RESTART));
    sigaction(SIGUSR1, &sa, NULL);                      /* put it back */
    raise(SIGUSR1);
    printf("ran %d\n", ran);
    return 0;
}
