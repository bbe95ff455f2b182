/* recvcontend: T threads each calling recv(MSG_DONTWAIT) on a connection
 * of its own with nothing to read (EAGAIN), K times: every call takes and
 * releases the library's socket registry read guard, one lock word shared
 * by all threads (platform/lock.rs). --peek: one byte waits in each
 * connection and every call peeks at it (MSG_PEEK: from the ring, no
 * system call), so that the lock is most of what a call does. Prints one JSON line: threads, calls,
 * the process's CPU time (user + system, getrusage) per call, and the
 * wall-clock calls per second.
 *
 *   recvcontend [--threads T] [--calls K] [--peek]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long calls = 1000000;
static int peek;
static pthread_barrier_t start;

static void *worker(void *arg)
{
	int s = *(int *)arg;
	char b[16];
	pthread_barrier_wait(&start);
	for (long i = 0; i < calls; i++) {
		ssize_t n = recv(s, b, sizeof b, MSG_DONTWAIT | (peek ? MSG_PEEK : 0));
		if (peek ? n != 1 : n >= 0 || errno != EAGAIN) {
			fprintf(stderr, "recvcontend: recv said %zd\n", n);
			exit(1);
		}
	}
	return NULL;
}

static double secs(struct timeval t) { return t.tv_sec + t.tv_usec / 1e6; }

int main(int argc, char **argv)
{
	int threads = 4;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--threads") && i + 1 < argc)
			threads = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--calls") && i + 1 < argc)
			calls = atol(argv[++i]);
		else if (!strcmp(argv[i], "--peek"))
			peek = 1;
		else {
			fprintf(stderr, "usage: recvcontend [--threads T] [--calls K] [--peek]\n");
			return 2;
		}
	}
	struct sockaddr_in sa = {.sin_family = AF_INET};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t sl = sizeof sa;
	int l = socket(AF_INET, SOCK_STREAM, 0);
	if (bind(l, (struct sockaddr *)&sa, sizeof sa) || listen(l, 64) ||
	    getsockname(l, (struct sockaddr *)&sa, &sl)) {
		perror("listen");
		return 1;
	}
	int *c = calloc(threads, sizeof(int)), *a = calloc(threads, sizeof(int));
	for (int i = 0; i < threads; i++) {
		c[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(c[i], (struct sockaddr *)&sa, sizeof sa) < 0 ||
		    (a[i] = accept(l, NULL, NULL)) < 0) {
			perror("connect");
			return 1;
		}
		if (peek && write(a[i], "p", 1) != 1) {
			perror("write");
			return 1;
		}
	}
	pthread_t *t = calloc(threads, sizeof(pthread_t));
	pthread_barrier_init(&start, NULL, threads + 1);
	for (int i = 0; i < threads; i++)
		pthread_create(&t[i], NULL, worker, &c[i]);
	struct rusage r0, r1;
	struct timespec w0, w1;
	getrusage(RUSAGE_SELF, &r0);
	clock_gettime(CLOCK_MONOTONIC, &w0);
	pthread_barrier_wait(&start);
	for (int i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &w1);
	getrusage(RUSAGE_SELF, &r1);
	double n = (double)calls * threads;
	double cpu = secs(r1.ru_utime) - secs(r0.ru_utime) + secs(r1.ru_stime) - secs(r0.ru_stime);
	double wall = (w1.tv_sec - w0.tv_sec) + (w1.tv_nsec - w0.tv_nsec) / 1e9;
	printf("{\"threads\": %d, \"calls\": %.0f, \"cpu_ns_per_call\": %.1f, \"calls_per_s\": %.0f}\n",
	       threads, n, cpu * 1e9 / n, n / wall);
	return 0;
}
