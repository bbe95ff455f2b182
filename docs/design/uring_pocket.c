/*
 * uring_pocket: a prototype for docs/decisions.md 40 (not built by `make`;
 * Linux >= 6.8: IORING_OP_FIXED_FD_INSTALL, a registered ring fd).
 *
 * Two questions, answered on this kernel by running it
 * (cc -O2 -Wall -pthread -o uring_pocket uring_pocket.c && ./uring_pocket):
 * 1. Can a listening Unix socket (the emulated listener's rendezvous) be
 *    held in no fd number at all, and still make the epoll instance that
 *    is the application's listener fd readable? It is put in an io_uring
 *    fixed-file slot, the ring's own fd registered (IORING_REGISTER_RING_FDS)
 *    and closed, the socket's fd closed: epoll keeps a member whose file
 *    lives (the ring holds a reference).
 * 2. With exactly one free fd number (kernel TCP's accept at the limit),
 *    can a connection be accepted AND its message's memfd taken and
 *    mapped? The accept goes into a fixed slot (no number), the recvmsg on
 *    that slot installs the memfd on the free number, it is mapped and
 *    closed, and IORING_OP_FIXED_FD_INSTALL puts the connection on that
 *    same number.
 * Prints each step's result. A second thread, and the connector (a
 * forked child), say whether they can use the registered ring: neither
 * can (a registered ring fd belongs to the thread that registered it;
 * fork copies no io_uring context). The connector then prints the reply it
 * got over the accepted connection.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <linux/io_uring.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <pthread.h>
#include <unistd.h>

#define OP_FIXED_FD_INSTALL 54
#ifndef IORING_FEAT_REG_REG_RING
#define IORING_FEAT_REG_REG_RING (1U << 13)
#endif
#ifndef IORING_REGISTER_USE_REGISTERED_RING
#define IORING_REGISTER_USE_REGISTERED_RING (1U << 31)
#endif
static unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
static struct io_uring_sqe *sqes;
static struct io_uring_cqe *cqes;
static int ring_index; /* registered ring */

static int run(struct io_uring_sqe *s)
{
    unsigned t = *sq_tail, i = t & *sq_mask;
    sqes[i] = *s;
    sq_array[i] = i;
    __atomic_store_n(sq_tail, t + 1, __ATOMIC_RELEASE);
    int r = syscall(__NR_io_uring_enter, ring_index, 1, 1, IORING_ENTER_GETEVENTS | IORING_ENTER_REGISTERED_RING, NULL, 0);
    if (r < 0) { perror("io_uring_enter"); exit(1); }
    unsigned h = *cq_head;
    int res = cqes[h & *cq_mask].res;
    __atomic_store_n(cq_head, h + 1, __ATOMIC_RELEASE);
    return res;
}

/* Another thread of the same process: is the registered ring its too? */
static void *other_thread(void *arg)
{
    (void)arg;
    long e = syscall(__NR_io_uring_enter, ring_index, 0, 0, IORING_ENTER_REGISTERED_RING, NULL, 0);
    printf("another thread: io_uring_enter on the registered ring: %ld (%s)\n", e, e < 0 ? strerror(errno) : "ok");
    return NULL;
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path + 1, sizeof a.sun_path - 1, "fdpar14-proto-%d", getpid());
    socklen_t alen = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(a.sun_path + 1);
    int r = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (bind(r, (void *)&a, alen) || listen(r, 16)) { perror("listen"); return 1; }
    int ep = epoll_create1(EPOLL_CLOEXEC); /* the application's listener fd */
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 1};
    epoll_ctl(ep, EPOLL_CTL_ADD, r, &ev);

    struct io_uring_params p = {0};
    int rfd = syscall(__NR_io_uring_setup, 4, &p);
    if (rfd < 0) { perror("io_uring_setup"); return 1; }
    printf("features 0x%x reg_reg_ring %d\n", p.features, !!(p.features & IORING_FEAT_REG_REG_RING));
    size_t sql = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cql = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (cql > sql) sql = cql;
    char *sq = mmap(0, sql, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, rfd, IORING_OFF_SQ_RING);
    char *cq = sq; /* IORING_FEAT_SINGLE_MMAP */
    sqes = mmap(0, p.sq_entries * sizeof *sqes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, rfd, IORING_OFF_SQES);
    sq_tail = (void *)(sq + p.sq_off.tail); sq_mask = (void *)(sq + p.sq_off.ring_mask); sq_array = (void *)(sq + p.sq_off.array);
    cq_head = (void *)(cq + p.cq_off.head); cq_tail = (void *)(cq + p.cq_off.tail); cq_mask = (void *)(cq + p.cq_off.ring_mask);
    cqes = (void *)(cq + p.cq_off.cqes);
    /* slot 0: the rendezvous; slot 1: free, for a connection */
    int files[2] = {r, -1};
    if (syscall(__NR_io_uring_register, rfd, IORING_REGISTER_FILES, files, 2)) { perror("register files"); return 1; }
    struct io_uring_rsrc_update u = {.offset = -1U, .data = rfd};
    if (syscall(__NR_io_uring_register, rfd, IORING_REGISTER_RING_FDS, &u, 1) != 1) { perror("register ring"); return 1; }
    ring_index = u.offset;
    close(rfd);
    close(r); /* the rendezvous is in no fd number now */
    pthread_t th;
    pthread_create(&th, NULL, other_thread, NULL);
    pthread_join(th, NULL);

    pid_t kid = fork();
    if (kid == 0) { /* a connector: connect, then a message with a memfd */
        /* A forked child has no registered ring (the parent's task context
         * is not copied): its io_uring_enter on the index fails. */
        long e = syscall(__NR_io_uring_enter, ring_index, 0, 0, IORING_ENTER_REGISTERED_RING, NULL, 0);
        printf("forked child: io_uring_enter on the registered ring: %ld (%s)\n", e, e < 0 ? strerror(errno) : "ok");
        int c = socket(AF_UNIX, SOCK_STREAM, 0);
        if (connect(c, (void *)&a, alen)) { perror("connect"); _exit(1); }
        int m = memfd_create("seg", 0);
        ftruncate(m, 4096);
        char *seg = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
        strcpy(seg, "segment bytes");
        char byte = 'C', cb[CMSG_SPACE(sizeof(int))] = {0};
        struct iovec iov = {&byte, 1};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb, .msg_controllen = sizeof cb};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET; cm->cmsg_type = SCM_RIGHTS; cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &m, sizeof m);
        sendmsg(c, &mh, 0);
        char reply[8] = {0};
        read(c, reply, sizeof reply);
        printf("connector got reply \"%s\"\n", reply); fflush(stdout);
        _exit(0);
    }
    /* the listener, its epoll instance watching a socket held only by the ring */
    struct epoll_event got;
    int n = epoll_wait(ep, &got, 1, 2000);
    printf("epoll instance readable with the rendezvous in no fd: %d (data %llu)\n", n, (unsigned long long)got.data.u64);
    usleep(100000); /* the message too */

    /* fill the table: exactly one free number left */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    int lim = 64;
    int last = -1;
    struct rlimit nl = {lim, lim};
    setrlimit(RLIMIT_NOFILE, &nl);
    for (;;) { int d = dup(0); if (d < 0) break; last = d; }
    close(last);
    printf("one free number: %d\n", last);
    int probe = dup(0);
    printf("dup with it taken: %d\n", dup(0)); /* -1 EMFILE */
    close(probe);

    struct io_uring_sqe s = {0};
    s.opcode = IORING_OP_ACCEPT; s.fd = 0; s.flags = IOSQE_FIXED_FILE; s.file_index = 2; /* slot 1 */
    s.accept_flags = 0; /* SOCK_CLOEXEC is EINVAL for a direct descriptor */
    printf("accept into fixed slot 1: %d\n", run(&s));

    char byte, cb[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {&byte, 1};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb, .msg_controllen = sizeof cb};
    memset(&s, 0, sizeof s);
    s.opcode = IORING_OP_RECVMSG; s.fd = 1; s.flags = IOSQE_FIXED_FILE; s.addr = (unsigned long)&mh; s.len = 1;
    s.msg_flags = MSG_CMSG_CLOEXEC;
    int rr = run(&s);
    int memfd = -1;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    if (cm && cm->cmsg_type == SCM_RIGHTS) memcpy(&memfd, CMSG_DATA(cm), sizeof memfd);
    printf("recvmsg on the fixed connection: %d, flags 0x%x, memfd %d\n", rr, mh.msg_flags, memfd);
    char *seg = mmap(0, 4096, PROT_READ, MAP_SHARED, memfd, 0);
    printf("segment says \"%s\"\n", seg == MAP_FAILED ? "(map failed)" : seg);
    close(memfd);

    memset(&s, 0, sizeof s);
    s.opcode = OP_FIXED_FD_INSTALL; s.fd = 1; s.flags = IOSQE_FIXED_FILE; s.rw_flags = 0; /* O_CLOEXEC kept */
    int conn = run(&s);
    printf("connection installed at %d (the freed number %d)\n", conn, last);
    int none = -1;
    struct io_uring_files_update fu = {.offset = 1, .fds = (unsigned long)&none};
    printf("slot 1 cleared: %ld\n", syscall(__NR_io_uring_register, ring_index, IORING_REGISTER_FILES_UPDATE | IORING_REGISTER_USE_REGISTERED_RING, &fu, 1));
    write(conn, "ok", 3);
    int st;
    waitpid(kid, &st, 0);
    return 0;
}
