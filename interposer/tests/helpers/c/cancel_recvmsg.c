// A thread blocked in recvmsg (with a control buffer) on a Unix socket not
// the library's is cancelled: the process must not abort (decision 67).
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
static int sv[2];
static void *reader(void *arg) {
    (void)arg;
    char data[16], control[64];
    struct iovec iov = {data, sizeof data};
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = &iov; m.msg_iovlen = 1; m.msg_control = control; m.msg_controllen = sizeof control;
    recvmsg(sv[0], &m, 0);
    return NULL;
}
int main(void) {
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    pthread_t t;
    pthread_create(&t, NULL, reader, NULL);
    usleep(200000);
    pthread_cancel(t);
    void *r;
    pthread_join(t, &r);
    printf("joined %s\n", r == PTHREAD_CANCELED ? "cancelled" : "returned");
    return 0;
}
