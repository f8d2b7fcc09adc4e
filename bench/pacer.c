/*
 * pacer: a fixed-rate (open-loop) HTTP/1.1 load generator for bench/proxy.py.
 *
 *   pacer PORT PATH RATE CONNECTIONS WARMUP_S DURATION_S SAMPLES_FILE
 *
 * wrk is closed-loop: a connection sends its next request only when the
 * previous answer arrived, so a stalling server receives fewer requests and
 * its stalls vanish from the figures ("coordinated omission"). wrk2 fixes
 * that but is not packaged in Debian; this is the same idea, small:
 *
 *  - request i is due at t0 + i/RATE (one global schedule); a timerfd wakes
 *    the loop at the next due time, and every loop pass releases all due
 *    requests;
 *  - a released request goes out on an idle keep-alive connection, or waits
 *    in a FIFO backlog while all CONNECTIONS are busy; that wait counts in
 *    its latency, so a server stall shows up instead of slowing us down;
 *  - latency = end of response - release; lag = release - due measures the
 *    generator itself (timer wake-up, CPU shared with the upstream).
 *
 * Only requests due inside the measurement window (after WARMUP_S, for
 * DURATION_S) are recorded; responses that arrive inside it are counted too
 * (completed_in_window), which is the throughput actually delivered. It
 * writes, to SAMPLES_FILE, int64 n then n latencies and n lags in
 * nanoseconds (native byte order), and prints one JSON line of counters.
 * bench/pacer.py compiles it (cc -O2), runs it and computes the quantiles.
 * Talks to 127.0.0.1 only; responses must carry a
 * Content-Length (the benchmark's static files do); one request in flight
 * per connection (no pipelining), like wrk.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX 16384
#define DRAIN_NS 2000000000LL

typedef struct {
    int fd;
    int busy;
    int64_t released, due;
    int in_body;
    size_t head_len;
    int64_t body_left;
    int status;
    int close_after;
    char head[HEAD_MAX + 1];
} conn_t;

typedef struct {
    int64_t released, due;
} pending_t;

static int port_arg, nconns;
static double rate;
static char request[1024];
static size_t request_len;
static int epfd;
static conn_t *conns;
static conn_t **idle;
static int nidle;
static pending_t *backlog;
static int64_t bl_head, bl_tail, max_backlog;
static int64_t t0, total, released, inflight;
static int64_t win_start, win_end, *lat, *lag, nsamples, window_cap;
static int64_t errors, reconnects, completed_total, completed_in_window;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "pacer: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int64_t due_time(int64_t i) { return t0 + (int64_t)((double)i * 1e9 / rate); }

static void open_conn(conn_t *c) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port_arg)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect to 127.0.0.1");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    c->fd = fd;
    c->busy = 0;
    c->in_body = 0;
    c->head_len = 0;
    c->close_after = 0;
    idle[nidle++] = c;
}

static void send_on(conn_t *c, int64_t rel, int64_t due);

static void lost(conn_t *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->busy) {
        errors++;
        inflight--;
    } else {
        for (int i = 0; i < nidle; i++)
            if (idle[i] == c) {
                idle[i] = idle[--nidle];
                break;
            }
    }
    reconnects++;
    open_conn(c);
    if (bl_head < bl_tail) {
        nidle--;
        pending_t p = backlog[bl_head++];
        send_on(c, p.released, p.due);
    }
}

static void send_on(conn_t *c, int64_t rel, int64_t due) {
    c->busy = 1;
    c->released = rel;
    c->due = due;
    inflight++;
    ssize_t n = write(c->fd, request, request_len);
    if (n != (ssize_t)request_len) lost(c);
}

static void release_due(int64_t now) {
    while (released < total) {
        int64_t due = due_time(released);
        if (due > now) break;
        released++;
        if (nidle) {
            send_on(idle[--nidle], now, due);
        } else {
            backlog[bl_tail++] = (pending_t){now, due};
            if (bl_tail - bl_head > max_backlog) max_backlog = bl_tail - bl_head;
        }
    }
}

/* Record the response; returns 1 when the connection was replaced (Connection: close). */
static int completed(conn_t *c) {
    int64_t now = now_ns();
    c->busy = 0;
    inflight--;
    completed_total++;
    if (now >= win_start && now < win_end) completed_in_window++;
    if (c->due >= win_start && c->due < win_end) {
        if (c->status == 200 && nsamples < window_cap) {
            lat[nsamples] = now - c->released;
            lag[nsamples] = c->released - c->due;
            nsamples++;
        } else {
            errors++;
        }
    } else if (c->status != 200) {
        errors++;
    }
    c->in_body = 0;
    c->head_len = 0;
    if (c->close_after) {
        lost(c); /* not busy, so no error: reconnects and takes the next backlog entry */
        return 1;
    }
    if (bl_head < bl_tail) {
        pending_t p = backlog[bl_head++];
        send_on(c, p.released, p.due);
    } else {
        idle[nidle++] = c;
    }
    return 0;
}

static int parse_head(conn_t *c, size_t head_end) {
    c->head[head_end] = '\0';
    if (sscanf(c->head, "HTTP/1.%*d %d", &c->status) != 1) return -1;
    int64_t length = -1;
    for (char *line = strstr(c->head, "\r\n"); line && line[2]; line = strstr(line + 2, "\r\n")) {
        char *h = line + 2;
        if (strncasecmp(h, "content-length:", 15) == 0) length = strtoll(h + 15, NULL, 10);
        if (strncasecmp(h, "connection:", 11) == 0 && strcasestr(h, "close") &&
            strcasestr(h, "close") < strstr(h, "\r\n"))
            c->close_after = 1;
    }
    if (length < 0) return -1;
    c->body_left = length;
    return 0;
}

/* Feed bytes of the one outstanding response; -1 on a protocol error. */
static int feed(conn_t *c, const char *p, size_t n) {
    while (n > 0) {
        if (!c->busy) return -1; /* bytes nobody asked for */
        if (!c->in_body) {
            size_t room = HEAD_MAX - c->head_len;
            size_t take = n < room ? n : room;
            if (take == 0) return -1;
            size_t old = c->head_len;
            memcpy(c->head + old, p, take);
            c->head_len += take;
            c->head[c->head_len] = '\0';
            char *end = strstr(c->head + (old > 3 ? old - 3 : 0), "\r\n\r\n");
            if (!end) {
                p += take;
                n -= take;
                continue;
            }
            size_t head_end = (size_t)(end - c->head) + 4;
            size_t used = head_end - old; /* bytes of this chunk that were head */
            if (parse_head(c, head_end) < 0) return -1;
            c->in_body = 1;
            p += used;
            n -= used;
        } else {
            size_t take = (int64_t)n < c->body_left ? n : (size_t)c->body_left;
            c->body_left -= (int64_t)take;
            p += take;
            n -= take;
        }
        if (c->in_body && c->body_left == 0 && completed(c)) return 0;
    }
    return 0;
}

static void arm(int tfd, int64_t at) {
    struct itimerspec its = {0};
    its.it_value.tv_sec = at / 1000000000LL;
    its.it_value.tv_nsec = at % 1000000000LL;
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) die("timerfd_settime");
}

static int write_samples(const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fwrite(&nsamples, sizeof nsamples, 1, f) == 1 &&
             fwrite(lat, sizeof *lat, (size_t)nsamples, f) == (size_t)nsamples &&
             fwrite(lag, sizeof *lag, (size_t)nsamples, f) == (size_t)nsamples;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr,
                "usage: pacer PORT PATH RATE CONNECTIONS WARMUP_S DURATION_S SAMPLES_FILE\n");
        return 2;
    }
    port_arg = atoi(argv[1]);
    rate = atof(argv[3]);
    nconns = atoi(argv[4]);
    double warmup = atof(argv[5]), duration = atof(argv[6]);
    if (port_arg <= 0 || port_arg > 65535 || rate <= 0 || nconns <= 0 || warmup < 0 ||
        duration <= 0) {
        fprintf(stderr, "pacer: bad arguments\n");
        return 2;
    }
    request_len = (size_t)snprintf(request, sizeof request,
                                   "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", argv[2],
                                   port_arg);
    if (request_len >= sizeof request) {
        fprintf(stderr, "pacer: path too long\n");
        return 2;
    }
    total = (int64_t)(rate * (warmup + duration));
    window_cap = (int64_t)(rate * duration) + 2;
    conns = calloc((size_t)nconns, sizeof *conns);
    idle = calloc((size_t)nconns, sizeof *idle);
    backlog = calloc((size_t)total + 1, sizeof *backlog);
    lat = calloc((size_t)window_cap, sizeof *lat);
    lag = calloc((size_t)window_cap, sizeof *lag);
    if (!conns || !idle || !backlog || !lat || !lag) die("calloc");

    epfd = epoll_create1(0);
    if (epfd < 0) die("epoll_create1");
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    if (tfd < 0) die("timerfd_create");
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &tev) < 0) die("epoll_ctl");
    for (int i = 0; i < nconns; i++) open_conn(&conns[i]);

    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    t0 = now_ns() + 1000000; /* 1 ms from now */
    win_start = t0 + (int64_t)(warmup * 1e9);
    win_end = win_start + (int64_t)(duration * 1e9);
    int64_t stop_at = 0;
    static char buf[262144];
    struct epoll_event evs[256];
    arm(tfd, t0);
    for (;;) {
        int k = epoll_wait(epfd, evs, 256, -1);
        if (k < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < k; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c) {
                uint64_t expirations;
                if (read(tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
                    die("read timerfd");
                continue;
            }
            for (;;) {
                ssize_t n = read(c->fd, buf, sizeof buf);
                if (n > 0) {
                    if (feed(c, buf, (size_t)n) < 0) {
                        lost(c);
                        break;
                    }
                    if ((size_t)n < sizeof buf) break;
                } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                    break;
                } else if (n < 0 && errno == EINTR) {
                    continue;
                } else {
                    lost(c);
                    break;
                }
            }
        }
        int64_t now = now_ns();
        release_due(now);
        if (released < total) {
            arm(tfd, due_time(released));
        } else {
            if (!stop_at) {
                stop_at = now + DRAIN_NS;
                arm(tfd, stop_at);
            }
            if ((inflight == 0 && bl_head == bl_tail) || now >= stop_at) break;
        }
    }
    getrusage(RUSAGE_SELF, &ru1);
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
                 (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
                 (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    if (write_samples(argv[7]) < 0) die("write samples");
    int64_t window_due = 0;
    for (int64_t i = 0; i < total; i++) {
        int64_t d = due_time(i);
        if (d >= win_start && d < win_end) window_due++;
    }
    printf("{\"target_rate\": %.3f, \"window_s\": %.3f, \"released\": %lld, \"completed\": %lld, "
           "\"errors\": %lld, \"unanswered\": %lld, \"max_backlog\": %lld, "
           "\"generator_cpu_s\": %.3f, \"reconnects\": %lld, \"completed_total\": %lld, "
           "\"completed_in_window\": %lld}\n",
           rate, duration, (long long)window_due, (long long)nsamples, (long long)errors,
           (long long)(inflight + (bl_tail - bl_head)), (long long)max_backlog, cpu,
           (long long)reconnects, (long long)completed_total, (long long)completed_in_window);
    return 0;
}
