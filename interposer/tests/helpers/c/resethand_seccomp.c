// resethand_seccomp.c: a SA_RESETHAND handler for SIGUSR1, then a seccomp
// filter that kills the process on rt_sigaction; raise(SIGUSR1) twice. The
// kernel: the handler runs once, the second raise takes the default action
// (the process dies of SIGUSR1). The library must neither call
// rt_sigaction under the filter nor drop the second signal.
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
static volatile int ran;
static void h(int s) { (void)s; ran++; }
int main(void) {
  struct sigaction sa = {.sa_handler = h, .sa_flags = SA_RESETHAND};
  sigaction(SIGUSR1, &sa, 0);
  struct sock_filter f[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_rt_sigaction, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
  struct sock_fprog p = {4, f};
  prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &p)) { perror("seccomp"); return 1; }
  raise(SIGUSR1);
  printf("ran %d\n", ran); fflush(stdout);
  raise(SIGUSR1);
  printf("not reached\n");
  return 0;
}
