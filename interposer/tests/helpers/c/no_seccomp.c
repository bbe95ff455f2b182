/* A diagnostic shim for interposer/tests/programs.rs, preloaded into sshd
 * after libshmnet.so: prctl(PR_SET_SECCOMP) fails with EINVAL, as on a
 * kernel without seccomp, so sshd's pre-authentication child runs without
 * its syscall filter (OpenSSH logs the failure and goes on). Every other
 * prctl passes through. Build: cc -shared -fPIC -o no_seccomp.so
 * no_seccomp.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <sys/prctl.h>

int prctl(int option, ...)
{
    va_list ap;
    va_start(ap, option);
    unsigned long a2 = va_arg(ap, unsigned long);
    unsigned long a3 = va_arg(ap, unsigned long);
    unsigned long a4 = va_arg(ap, unsigned long);
    unsigned long a5 = va_arg(ap, unsigned long);
    va_end(ap);
    if (option == PR_SET_SECCOMP) {
        errno = EINVAL;
        return -1;
    }
    int (*real)(int, ...) = (int (*)(int, ...))dlsym(RTLD_NEXT, "prctl");
    return real(option, a2, a3, a4, a5);
}
