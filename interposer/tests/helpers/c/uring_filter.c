/*
 * uring_filter deny|kill PROGRAM ARGS...: runs PROGRAM under a seccomp
 * filter whose action for io_uring_setup is EPERM ("deny": container
 * runtimes' default profiles) or SECCOMP_RET_KILL_PROCESS ("kill":
 * systemd's SystemCallFilter= without SystemCallErrorNumber=, bwrap,
 * minijail), letting every other call through. The filter is made with the
 * seccomp system call itself, then PROGRAM is exec'd: a program started
 * under a filter (fd_limit.rs: the library falls back to making room for
 * the memfd, and must make no io_uring call where it would be killed;
 * decision 58).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH AUDIT_ARCH_AARCH64
#endif

int main(int argc, char **argv)
{
    int kill = argc >= 3 && !strcmp(argv[1], "kill");
    if (argc < 3 || (!kill && strcmp(argv[1], "deny"))) {
        fprintf(stderr, "usage: uring_filter deny|kill PROGRAM ARGS...\n");
        return 2;
    }
    unsigned action = kill ? SECCOMP_RET_KILL_PROCESS : SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA);
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, action),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) {
        perror("uring_filter: seccomp");
        return 1;
    }
    execvp(argv[2], argv + 2);
    perror("uring_filter: exec");
    return 127;
}
