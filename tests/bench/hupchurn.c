/* hupchurn: what one closed connection costs an epoll server that holds
 * N idle ones (issue 14: readiness work per call must not grow with the
 * set).
 *
 *   hupchurn [--idle N] [--churn M] [--port P]
 *
 * The parent is the server: one thread, one epoll set (the listener and
 * every accepted connection, EPOLLIN|EPOLLRDHUP, level-triggered); it
 * echoes what it reads and closes a connection at end of stream. A
 * forked child opens N connections that stay idle, then M times
 * connects, sends 8 bytes, reads them back and closes. The server counts
 * its own user-space instructions and task clock (perf_event_open on
 * itself) from the first churned accept to the M-th close, and prints
 * one JSON line: idle, churn, instructions (null without hardware
 * counters), nanoseconds and epoll_wait calls per churned connection.
 * Under callgrind (--instr-atstart=no) only that stretch is
 * instrumented (the server's; the client is never): its instructions
 * over M are the server's per churned connection, where no hardware
 * counter is (scripts/bench-hupchurn.sh). Under libshmnet each close reaches the server as the Unix
 * connection's hang-up (EPOLLIN|EPOLLRDHUP|EPOLLHUP), which the library
 * turns into TCP's events (hangups.rs).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/perf_event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#else
#define CALLGRIND_START_INSTRUMENTATION
#define CALLGRIND_STOP_INSTRUMENTATION
#endif

static void die(const char *what)
{
	fprintf(stderr, "hupchurn: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int counter(uint32_t type, uint64_t config)
{
	struct perf_event_attr a;
	memset(&a, 0, sizeof a);
	a.size = sizeof a;
	a.type = type;
	a.config = config;
	a.disabled = 1;
	a.exclude_kernel = 1;
	a.exclude_hv = 1;
	return (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
}

static uint64_t value(int fd)
{
	uint64_t v = 0;
	if (fd < 0 || read(fd, &v, sizeof v) != sizeof v)
		return 0;
	return v;
}

static int dial(int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int s = socket(AF_INET, SOCK_STREAM, 0);
	if (s < 0)
		die("socket");
	if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0)
		die("connect");
	return s;
}

static void client(int port, int idle, int churn)
{
	int *fds = calloc(idle ? idle : 1, sizeof(int));
	for (int i = 0; i < idle; i++)
		fds[i] = dial(port);
	for (int i = 0; i < churn; i++) {
		int s = dial(port);
		char buf[8] = "churn!!", back[8];
		if (write(s, buf, 8) != 8)
			die("write");
		size_t got = 0;
		while (got < 8) {
			ssize_t r = read(s, back + got, 8 - got);
			if (r <= 0)
				die("read");
			got += r;
		}
		if (memcmp(buf, back, 8))
			die("echo differs");
		close(s);
	}
	for (int i = 0; i < idle; i++)
		close(fds[i]);
	exit(0);
}

int main(int argc, char **argv)
{
	int idle = 1000, churn = 2000, port = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--idle") && i + 1 < argc)
			idle = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--churn") && i + 1 < argc)
			churn = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--port") && i + 1 < argc)
			port = atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: hupchurn [--idle N] [--churn M] [--port P]\n");
			return 2;
		}
	}
	int l = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t sl = sizeof sa;
	if (bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 4096) < 0 ||
	    getsockname(l, (struct sockaddr *)&sa, &sl) < 0)
		die("listen");
	port = ntohs(sa.sin_port);
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		close(l);
		client(port, idle, churn);
	}
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.fd = l};
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) < 0)
		die("epoll");
	int ins = counter(PERF_TYPE_HARDWARE, PERF_COUNT_HW_INSTRUCTIONS);
	int clk = counter(PERF_TYPE_SOFTWARE, PERF_COUNT_SW_TASK_CLOCK);
	int accepted = 0, closed = 0, hups = 0, counting = 0, waits = 0;
	struct epoll_event evs[64];
	while (closed < churn) {
		int n = epoll_wait(ep, evs, 64, 10000);
		waits += counting;
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("epoll_wait (stalled)");
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == l) {
				int c = accept4(l, NULL, NULL, SOCK_NONBLOCK);
				if (c < 0) {
					if (errno == EAGAIN)
						continue;
					die("accept");
				}
				if (++accepted == idle + 1 && !counting) {
					counting = 1;
					ioctl(ins, PERF_EVENT_IOC_ENABLE, 0);
					ioctl(clk, PERF_EVENT_IOC_ENABLE, 0);
					CALLGRIND_START_INSTRUMENTATION;
				}
				struct epoll_event ce = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = c};
				if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce) < 0)
					die("epoll_ctl");
				continue;
			}
			if (evs[i].events & EPOLLHUP)
				hups++;
			char buf[64];
			ssize_t r = read(fd, buf, sizeof buf);
			if (r > 0) {
				if (write(fd, buf, r) != r)
					die("echo");
				continue;
			}
			if (r < 0 && errno == EAGAIN)
				continue;
			close(fd);
			closed++;
		}
	}
	ioctl(ins, PERF_EVENT_IOC_DISABLE, 0);
	ioctl(clk, PERF_EVENT_IOC_DISABLE, 0);
	CALLGRIND_STOP_INSTRUMENTATION;
	int status = 0;
	waitpid(child, &status, 0);
	uint64_t ni = value(ins), nc = value(clk);
	/* (No hardware counters in a VM without a PMU: null.) */
	char insn[32] = "null";
	if (ni)
		snprintf(insn, sizeof insn, "%.0f", (double)ni / churn);
	printf("{\"idle\": %d, \"churn\": %d, \"instructions_per_conn\": %s, "
	       "\"ns_per_conn\": %.0f, \"waits_per_conn\": %.2f, \"hup_events\": %d, \"client_ok\": %s}\n",
	       idle, churn, insn, (double)nc / churn, (double)waits / churn, hups,
	       WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "true" : "false");
	return 0;
}
