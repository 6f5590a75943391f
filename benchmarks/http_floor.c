/* The HTTP floor: a server that does nothing but the socket work of an MI request.
 *
 * benchmarks/mi_http.py runs it beside ours and the peers, with the same clients, to show
 * what one request costs this machine's kernel whatever the server does: the system calls
 * (epoll_wait, recv, send; accept4 and close per Connection: close exchange), the sleep
 * between requests and the wake-up of the client.  Every reply is the same canned
 * mq_get_size result with the request's id echoed, so no MI work is done at all; the
 * difference between a server's CPU per request and this one's is what that server adds.
 *
 * Usage: http_floor PORT WORKERS PIDFILE
 * WORKERS processes share one listening socket on 127.0.0.1:PORT, each with its own epoll
 * loop, as our HTTP workers do.  The parent writes PIDFILE, waits, and on SIGTERM stops
 * the workers.  Requests are read with Content-Length framing (a request split over reads
 * is kept until whole); `Connection: close` in the request closes after the reply.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_FD 65536
#define BUF 8192

static char *bufs[MAX_FD];
static int used[MAX_FD];

/* The length of the whole request at the start of b[0:n] (head and body), 0 while it is
 * incomplete; *close set when it asks for Connection: close. */
static int request_length(const char *b, int n, int *close) {
    const char *end = memmem(b, (size_t)n, "\r\n\r\n", 4);
    if (end == NULL)
        return 0;
    int head = (int)(end - b) + 4, length = 0;
    const char *cl = memmem(b, (size_t)head, "Content-Length:", 15);
    if (cl == NULL)
        cl = memmem(b, (size_t)head, "content-length:", 15);
    if (cl != NULL)
        length = atoi(cl + 15);
    *close = memmem(b, (size_t)head, "Connection: close", 17) != NULL;
    return n >= head + length ? head + length : 0;
}

/* The canned reply to the request b[0:len], the request's numeric or string id echoed. */
static int reply(const char *b, int len, int close, char *out, int cap) {
    const char *id = memmem(b, (size_t)len, "\"id\":", 5);
    int idn = 0;
    if (id != NULL) {
        id += 5;
        while (id + idn < b + len && id[idn] != '}' && id[idn] != ',')
            idn++;
    } else {
        id = "null";
        idn = 4;
    }
    char body[256];
    int bl = snprintf(body, sizeof body,
                      "{\"jsonrpc\":\"2.0\",\"result\":{\"Queue\":{\"name\":\"q1\","
                      "\"size\":100000}},\"id\":%.*s}", idn, id);
    return snprintf(out, (size_t)cap,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    "Content-Length: %d\r\n%s\r\n%s", bl, close ? "Connection: close\r\n" : "",
                    body);
}

/* Read what fd has and answer every whole request; 0 to keep it, -1 to close it. */
static int serve(int fd) {
    char out[1024];
    if (bufs[fd] == NULL && (bufs[fd] = malloc(BUF)) == NULL)
        return -1;
    for (;;) {
        ssize_t got = recv(fd, bufs[fd] + used[fd], (size_t)(BUF - used[fd]), 0);
        if (got < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        if (got == 0)
            return -1;
        used[fd] += (int)got;
        int close_it = 0, len;
        while ((len = request_length(bufs[fd], used[fd], &close_it)) > 0) {
            int rl = reply(bufs[fd], len, close_it, out, sizeof out);
            if (send(fd, out, (size_t)rl, MSG_NOSIGNAL) != rl)
                return -1;
            memmove(bufs[fd], bufs[fd] + len, (size_t)(used[fd] - len));
            used[fd] -= len;
            if (close_it)
                return -1;
        }
        if (used[fd] == BUF)
            return -1;  /* not a request this floor reads */
        if (got < BUF)
            return 0;  /* drained: wait for the next event */
    }
}

static void drop(int ep, int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    used[fd] = 0;
    close(fd);
}

static void worker(int lfd) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd}, evs[64];
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    for (;;) {
        int n = epoll_wait(ep, evs, 64, -1);
        for (int k = 0; k < n; k++) {
            int fd = evs[k].data.fd;
            if (fd != lfd) {
                if (serve(fd) < 0)
                    drop(ep, fd);
                continue;
            }
            int c;
            while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                if (c >= MAX_FD) {
                    close(c);
                    continue;
                }
                int one = 1;
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                used[c] = 0;
                if (serve(c) < 0) {  /* the first request is often there already */
                    used[c] = 0;
                    close(c);
                    continue;
                }
                struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
            }
        }
    }
}

static volatile sig_atomic_t stopping;

static void on_term(int sig) {
    (void)sig;
    stopping = 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: http_floor PORT WORKERS PIDFILE\n");
        return 2;
    }
    int port = atoi(argv[1]), workers = atoi(argv[2]);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 1024) < 0) {
        perror("http_floor: bind/listen");
        return 1;
    }
    pid_t kids[64];
    if (workers < 1 || workers > 64)
        workers = 1;
    for (int w = 0; w < workers; w++) {
        kids[w] = fork();
        if (kids[w] == 0) {
            signal(SIGTERM, SIG_DFL);
            worker(lfd);
        }
    }
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    FILE *f = fopen(argv[3], "w");
    if (f == NULL) {
        perror("http_floor: pid file");
        stopping = 1;
    } else {
        fprintf(f, "%d\n", (int)getpid());
        fclose(f);
    }
    while (!stopping)
        pause();
    for (int w = 0; w < workers; w++)
        kill(kids[w], SIGTERM);
    while (wait(NULL) > 0)
        ;
    return 0;
}
