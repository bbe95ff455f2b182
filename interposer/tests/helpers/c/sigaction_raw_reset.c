/* sigaction_raw_reset [nd]: a program saves an action with the raw
 * rt_sigaction (as Go or static code does: under the library, the
 * trampoline), its one-shot (SA_RESETHAND) handler runs, and it puts the
 * saved action back with sigaction: the handler runs again, as without the
 * library (review fixes34 #1: a hang, or SIGSEGV with SA_NODEFER). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>
#include <sys/syscall.h>
struct kact { void *h; unsigned long flags; void *restorer; uint64_t mask; };
static volatile int hits;
static void h(int s) { (void)s; hits++; }
int main(int argc, char **argv) {
  setvbuf(stdout, 0, _IONBF, 0);
  int sig = SIGUSR1; int nodefer = argc > 1;
  struct sigaction sa = {0}; sa.sa_handler = h; sa.sa_flags = SA_RESETHAND | (nodefer ? SA_NODEFER : 0); sigaction(sig, &sa, 0);
  struct kact saved; syscall(SYS_rt_sigaction, sig, 0, &saved, 8);
  raise(sig); printf("after first raise hits=%d\n", hits);
  /* put the saved kernel action back through libc's sigaction */
  struct sigaction back = {0}; back.sa_handler = saved.h; back.sa_flags = saved.flags & ~0x04000000; memcpy(&back.sa_mask, &saved.mask, 8);
  sigaction(sig, &back, 0);
  raise(sig); printf("after second raise hits=%d\n", hits);
  return 0;
}
