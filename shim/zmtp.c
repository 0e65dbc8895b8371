/*
 * Minimal ZMTP 3.x client, see zmtp.h.
 *
 * Wire facts used here (23/ZMTP, 37/ZMTP):
 *   greeting  = 0xFF, 8 x padding, 0x7F, major, minor,
 *               mechanism (20 octets, NUL padded), as-server, 31 x filler
 *   frame     = flags, size (1 octet, or 8 octets big endian when LONG), body
 *   flags     = MORE 0x01, LONG 0x02, COMMAND 0x04
 *   command   = name-size (1 octet), name, data
 *   READY     = properties: name-size (1), name, value-size (4, BE), value
 *   ERROR     = reason-size (1), reason
 *   PING      = ttl (2), context (0..16)  ->  PONG = context
 */
#define _GNU_SOURCE
#include "zmtp.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define FLAG_MORE 0x01
#define FLAG_LONG 0x02
#define FLAG_COMMAND 0x04

#define MAX_COMMAND 65536

int64_t zmtp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int fail(struct zmtp_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return ZMTP_ERR;
}

static int fail_errno(struct zmtp_conn *c, const char *what)
{
    return fail(c, "%s: %s", what, strerror(errno));
}

static int timed_out(struct zmtp_conn *c)
{
    snprintf(c->err, sizeof c->err, "timed out");
    return ZMTP_TIMEOUT;
}

/* Wait until fd is ready for `events` or the deadline passes. */
static int wait_io(struct zmtp_conn *c, short events)
{
    for (;;) {
        int64_t left = c->deadline - zmtp_now_ms();
        if (left <= 0)
            return timed_out(c);
        struct pollfd p = {.fd = c->fd, .events = events, .revents = 0};
        int r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (r > 0)
            return ZMTP_OK; /* ready, or HUP/ERR: the next syscall reports it */
        if (r < 0 && errno != EINTR)
            return fail_errno(c, "poll");
    }
}

static int write_all(struct zmtp_conn *c, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = wait_io(c, POLLOUT);
            if (r != ZMTP_OK)
                return r;
        } else {
            if (w < 0 && (errno == EPIPE || errno == ECONNRESET))
                return fail(c, "connection closed by the daemon");
            return fail_errno(c, "send");
        }
    }
    return ZMTP_OK;
}

static int read_exact(struct zmtp_conn *c, unsigned char *dst, size_t n)
{
    while (n > 0) {
        if (c->rpos < c->rlen) {
            size_t k = c->rlen - c->rpos;
            if (k > n)
                k = n;
            memcpy(dst, c->rbuf + c->rpos, k);
            c->rpos += k;
            dst += k;
            n -= k;
            continue;
        }
        /* Large reads go straight into the destination. */
        int direct = n >= sizeof c->rbuf;
        ssize_t r = recv(c->fd, direct ? dst : c->rbuf,
                         direct ? n : sizeof c->rbuf, 0);
        if (r > 0) {
            if (direct) {
                dst += r;
                n -= (size_t)r;
            } else {
                c->rpos = 0;
                c->rlen = (size_t)r;
            }
        } else if (r == 0) {
            return fail(c, "connection closed by the daemon");
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int w = wait_io(c, POLLIN);
            if (w != ZMTP_OK)
                return w;
        } else if (errno == ECONNRESET) {
            return fail(c, "connection reset by the daemon");
        } else {
            return fail_errno(c, "recv");
        }
    }
    return ZMTP_OK;
}

/* Read one frame; the body is malloc'ed (never NULL on success). */
static int read_frame(struct zmtp_conn *c, unsigned char *flags,
                      unsigned char **body, size_t *len, size_t limit)
{
    unsigned char hdr[8];
    uint64_t size = 0;
    int r = read_exact(c, flags, 1);
    if (r != ZMTP_OK)
        return r;
    if (*flags & FLAG_LONG) {
        r = read_exact(c, hdr, 8);
        if (r != ZMTP_OK)
            return r;
        for (int i = 0; i < 8; i++)
            size = (size << 8) | hdr[i];
    } else {
        r = read_exact(c, hdr, 1);
        if (r != ZMTP_OK)
            return r;
        size = hdr[0];
    }
    if (size > limit)
        return fail(c, "frame of %llu bytes exceeds the limit of %zu bytes",
                    (unsigned long long)size, limit);
    *body = malloc(size ? (size_t)size : 1);
    if (*body == NULL)
        return fail(c, "out of memory");
    r = read_exact(c, *body, (size_t)size);
    if (r != ZMTP_OK) {
        free(*body);
        *body = NULL;
        return r;
    }
    *len = (size_t)size;
    return ZMTP_OK;
}

/* Append a frame header for a body of `len` bytes; returns header length. */
static size_t put_header(unsigned char *out, unsigned char flags, size_t len)
{
    if (len <= 255) {
        out[0] = flags;
        out[1] = (unsigned char)len;
        return 2;
    }
    out[0] = flags | FLAG_LONG;
    uint64_t v = len;
    for (int i = 8; i >= 1; i--) {
        out[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
    return 9;
}

int zmtp_connect(struct zmtp_conn *c, const char *path, int64_t deadline)
{
    struct sockaddr_un sa;
    size_t plen = strlen(path);

    c->fd = -1;
    c->deadline = deadline;
    c->rpos = c->rlen = 0;
    c->err[0] = '\0';
    if (c->max_msg == 0)
        c->max_msg = 64u << 20;

    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (plen == 0 || plen >= sizeof sa.sun_path)
        return fail(c, "socket path length %zu is not in 1..%zu", plen,
                    sizeof sa.sun_path - 1);
    memcpy(sa.sun_path, path, plen);
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + 1);
    if (path[0] == '@') { /* abstract namespace, as libzmq spells it */
        sa.sun_path[0] = '\0';
        salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
    }

    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return fail_errno(c, "socket");

    /*
     * A blocking connect on a unix socket waits only while the listener's
     * backlog is full; SO_SNDTIMEO bounds that wait.
     */
    int64_t left = deadline - zmtp_now_ms();
    if (left <= 0)
        return timed_out(c);
    struct timeval tv = {.tv_sec = (time_t)(left / 1000),
                         .tv_usec = (suseconds_t)((left % 1000) * 1000)};
    if (setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0)
        return fail_errno(c, "setsockopt");
    while (connect(c->fd, (struct sockaddr *)&sa, salen) < 0) {
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EINPROGRESS || errno == ETIMEDOUT)
            return timed_out(c);
        return fail(c, "%s", strerror(errno));
    }
    struct timeval zero = {0, 0};
    int fl = fcntl(c->fd, F_GETFL);
    if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
        setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &zero, sizeof zero) < 0)
        return fail_errno(c, "fcntl");
    return ZMTP_OK;
}

static int send_command(struct zmtp_conn *c, const unsigned char *body, size_t len)
{
    unsigned char hdr[9];
    size_t h = put_header(hdr, FLAG_COMMAND, len);
    unsigned char *buf = malloc(h + len);
    if (buf == NULL)
        return fail(c, "out of memory");
    memcpy(buf, hdr, h);
    memcpy(buf + h, body, len);
    int r = write_all(c, buf, h + len);
    free(buf);
    return r;
}

/* Does the command body `b` carry the name `name`?  Sets *data past it. */
static int command_is(const unsigned char *b, size_t len, const char *name, size_t *data)
{
    size_t n = strlen(name);
    if (len < 1 || b[0] != n || len < 1 + n || memcmp(b + 1, name, n) != 0)
        return 0;
    *data = 1 + n;
    return 1;
}

/* Copy at most cap-1 printable bytes of src into dst. */
static void printable(char *dst, size_t cap, const unsigned char *src, size_t n)
{
    size_t j = 0;
    for (size_t i = 0; i < n && j + 1 < cap; i++)
        dst[j++] = (src[i] >= 0x20 && src[i] < 0x7f) ? (char)src[i] : '?';
    dst[j] = '\0';
}

static int peer_error(struct zmtp_conn *c, const unsigned char *b, size_t len, size_t off)
{
    char reason[128] = "";
    if (off < len) {
        size_t n = b[off];
        if (n > len - off - 1)
            n = len - off - 1;
        printable(reason, sizeof reason, b + off + 1, n);
    }
    return fail(c, "the daemon sent ERROR: %s", reason);
}

static int check_ready(struct zmtp_conn *c, const unsigned char *b, size_t len,
                       const char *const *peer_types)
{
    size_t off;
    char type[64] = "";
    int have_type = 0;

    if (command_is(b, len, "ERROR", &off))
        return peer_error(c, b, len, off);
    if (!command_is(b, len, "READY", &off)) {
        char name[32];
        printable(name, sizeof name, b + 1, len > 1 ? (b[0] < len - 1 ? b[0] : len - 1) : 0);
        return fail(c, "expected READY, got command '%s'", name);
    }
    while (off < len) {
        size_t nlen = b[off];
        if (off + 1 + nlen + 4 > len)
            return fail(c, "truncated READY property");
        const unsigned char *name = b + off + 1;
        const unsigned char *v = name + nlen;
        size_t vlen = ((size_t)v[0] << 24) | ((size_t)v[1] << 16) | ((size_t)v[2] << 8) | v[3];
        off += 1 + nlen + 4;
        if (vlen > len - off)
            return fail(c, "truncated READY property value");
        if (nlen == 11 && strncasecmp((const char *)name, "Socket-Type", 11) == 0) {
            printable(type, sizeof type, b + off, vlen);
            have_type = 1;
        }
        off += vlen;
    }
    if (!have_type)
        return fail(c, "READY without Socket-Type");
    for (const char *const *t = peer_types; *t != NULL; t++)
        if (strcmp(type, *t) == 0)
            return ZMTP_OK;
    return fail(c, "the daemon socket type %s does not talk to REQ", type);
}

int zmtp_handshake(struct zmtp_conn *c, const char *socket_type, const char *const *peer_types)
{
    unsigned char g[64];
    int r;

    memset(g, 0, sizeof g);
    g[0] = 0xFF;
    g[9] = 0x7F;
    g[10] = 3; /* major */
    g[11] = 0; /* minor: we need nothing from 3.1 */
    memcpy(g + 12, "NULL", 4);
    r = write_all(c, g, sizeof g);
    if (r != ZMTP_OK)
        return r;

    /* Signature and major version first: an old peer never sends 64 bytes. */
    unsigned char pg[64];
    r = read_exact(c, pg, 11);
    if (r != ZMTP_OK)
        return r;
    if (pg[0] != 0xFF || (pg[9] & 0x01) == 0)
        return fail(c, "the peer does not speak ZMTP");
    if (pg[10] < 3)
        return fail(c, "the peer speaks ZMTP %u.x, need 3.x", pg[10]);
    r = read_exact(c, pg + 11, sizeof pg - 11);
    if (r != ZMTP_OK)
        return r;
    static const unsigned char null_mech[20] = {'N', 'U', 'L', 'L'};
    if (memcmp(pg + 12, null_mech, sizeof null_mech) != 0) {
        char mech[21];
        printable(mech, sizeof mech, pg + 12, strnlen((const char *)pg + 12, 20));
        return fail(c, "the peer wants security mechanism %s, not NULL", mech);
    }

    /* READY with our Socket-Type. */
    unsigned char ready[64];
    size_t tlen = strlen(socket_type), n = 0;
    if (tlen > 32)
        return fail(c, "socket type too long");
    ready[n++] = 5;
    memcpy(ready + n, "READY", 5);
    n += 5;
    ready[n++] = 11;
    memcpy(ready + n, "Socket-Type", 11);
    n += 11;
    ready[n++] = 0;
    ready[n++] = 0;
    ready[n++] = 0;
    ready[n++] = (unsigned char)tlen;
    memcpy(ready + n, socket_type, tlen);
    n += tlen;
    r = send_command(c, ready, n);
    if (r != ZMTP_OK)
        return r;

    unsigned char flags, *body;
    size_t len;
    r = read_frame(c, &flags, &body, &len, MAX_COMMAND);
    if (r != ZMTP_OK)
        return r;
    if (!(flags & FLAG_COMMAND))
        r = fail(c, "expected READY, got a message frame");
    else
        r = check_ready(c, body, len, peer_types);
    free(body);
    return r;
}

int zmtp_send(struct zmtp_conn *c, const struct zmtp_frame *frames, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += 9 + frames[i].len;
    unsigned char *buf = malloc(total ? total : 1), *p = buf;
    if (buf == NULL)
        return fail(c, "out of memory");
    for (size_t i = 0; i < n; i++) {
        p += put_header(p, i + 1 < n ? FLAG_MORE : 0, frames[i].len);
        if (frames[i].len)
            memcpy(p, frames[i].data, frames[i].len);
        p += frames[i].len;
    }
    int r = write_all(c, buf, (size_t)(p - buf));
    free(buf);
    return r;
}

/* A command received after the handshake. */
static int on_command(struct zmtp_conn *c, const unsigned char *b, size_t len)
{
    size_t off;
    if (command_is(b, len, "ERROR", &off))
        return peer_error(c, b, len, off);
    if (command_is(b, len, "PING", &off)) {
        unsigned char pong[1 + 4 + 16];
        size_t ctx = len > off + 2 ? len - off - 2 : 0;
        if (ctx > 16)
            ctx = 16;
        pong[0] = 4;
        memcpy(pong + 1, "PONG", 4);
        memcpy(pong + 5, b + off + 2, ctx);
        return send_command(c, pong, 5 + ctx);
    }
    return ZMTP_OK; /* anything else is of no interest to a REQ client */
}

int zmtp_recv(struct zmtp_conn *c, struct zmtp_msg *m)
{
    size_t total = 0;
    m->count = 0;
    for (;;) {
        unsigned char flags, *body;
        size_t len;
        int r = read_frame(c, &flags, &body, &len, c->max_msg - total);
        if (r != ZMTP_OK) {
            zmtp_msg_free(m);
            return r;
        }
        if (flags & FLAG_COMMAND) {
            r = on_command(c, body, len);
            free(body);
            if (r != ZMTP_OK) {
                zmtp_msg_free(m);
                return r;
            }
            continue;
        }
        if (m->count == ZMTP_MAX_FRAMES) {
            free(body);
            zmtp_msg_free(m);
            return fail(c, "message with more than %d frames", ZMTP_MAX_FRAMES);
        }
        m->frames[m->count].data = body;
        m->frames[m->count].len = len;
        m->count++;
        total += len;
        if (!(flags & FLAG_MORE))
            return ZMTP_OK;
    }
}

void zmtp_msg_free(struct zmtp_msg *m)
{
    for (size_t i = 0; i < m->count; i++)
        free(m->frames[i].data);
    m->count = 0;
}

void zmtp_close(struct zmtp_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}
