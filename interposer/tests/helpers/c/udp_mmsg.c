/* sendmmsg/recvmmsg batches on one emulated UDP socket pair
 * (interposer/tests/datagrams.rs).
 *
 *   udp_mmsg HOST PORT
 *
 * Binds a receiver on HOST:PORT; an unbound sender sends BATCHES batches
 * of 64 datagrams of varied sizes (0..2999) with one sendmmsg each; the
 * receiver takes them with recvmmsg (MSG_WAITFORONE) and checks every
 * length, byte and source. The first batch goes before the sender is
 * registered, the later ones through shared memory. Prints "mmsg ok N".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define N 64
#define BATCHES 4

static size_t size_of(int b, int i) { return (size_t)((b * 977 + i * 131) % 3000); }

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1)
        return 2;
    int r = socket(AF_INET, SOCK_DGRAM, 0), s = socket(AF_INET, SOCK_DGRAM, 0);
    if (bind(r, (struct sockaddr *)&a, sizeof a)) {
        perror("bind");
        return 2;
    }
    static char out[N][3000], in[N][3000];
    int total = 0;
    for (int b = 0; b < BATCHES; b++) {
        struct mmsghdr m[N];
        struct iovec iov[N];
        memset(m, 0, sizeof m);
        for (int i = 0; i < N; i++) {
            for (size_t j = 0; j < size_of(b, i); j++)
                out[i][j] = (char)(j + i + b);
            iov[i] = (struct iovec){out[i], size_of(b, i)};
            m[i].msg_hdr = (struct msghdr){.msg_name = &a, .msg_namelen = sizeof a,
                                           .msg_iov = &iov[i], .msg_iovlen = 1};
        }
        int sent = sendmmsg(s, m, N, 0);
        if (sent != N) {
            fprintf(stderr, "batch %d: sendmmsg %d\n", b, sent);
            return 1;
        }
        for (int i = 0; i < N; i++)
            if (m[i].msg_len != size_of(b, i)) {
                fprintf(stderr, "batch %d: msg_len %u\n", b, m[i].msg_len);
                return 1;
            }
        struct sockaddr_in self;
        socklen_t sl = sizeof self;
        getsockname(s, (struct sockaddr *)&self, &sl);
        int got = 0;
        while (got < N) {
            struct mmsghdr rm[N];
            struct iovec riov[N];
            struct sockaddr_in from[N];
            memset(rm, 0, sizeof rm);
            for (int i = 0; i < N - got; i++) {
                riov[i] = (struct iovec){in[got + i], sizeof in[0]};
                rm[i].msg_hdr = (struct msghdr){.msg_name = &from[i], .msg_namelen = sizeof from[i],
                                                .msg_iov = &riov[i], .msg_iovlen = 1};
            }
            int n = recvmmsg(r, rm, N - got, MSG_WAITFORONE, NULL);
            if (n <= 0) {
                perror("recvmmsg");
                return 1;
            }
            for (int i = 0; i < n; i++) {
                int k = got + i;
                if (rm[i].msg_len != size_of(b, k) || memcmp(in[k], out[k], size_of(b, k)) ||
                    from[i].sin_port != self.sin_port) {
                    fprintf(stderr, "batch %d datagram %d: wrong (%u bytes)\n", b, k, rm[i].msg_len);
                    return 1;
                }
            }
            got += n;
        }
        total += got;
    }
    printf("mmsg ok %d\n", total);
    return 0;
}
