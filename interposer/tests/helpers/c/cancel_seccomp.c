// cancel_seccomp: a program whose seccomp filter (prctl) kills the process on
// getpid (everything else allowed) cancels a worker that spins in
// pthread_testcancel (deferred; glibc's pthread_cancel makes no system call).
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
static volatile int started;
static void *spin(void *a) { (void)a; started = 1; for (;;) pthread_testcancel(); return NULL; }
int main(void) {
  struct sock_filter f[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getpid, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {.len = 4, .filter = f};
  pthread_t t; pthread_create(&t, NULL, spin, NULL);
  while (!started) usleep(1000);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) { perror("prctl"); return 2; }
  pthread_cancel(t);
  void *res; pthread_join(t, &res);
  printf("joined: %s\n", res == PTHREAD_CANCELED ? "canceled" : "returned");
  return 0;
}
