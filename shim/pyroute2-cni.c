/*
 * pyroute2-cni: the CNI plugin binary kubelet/containerd execute.
 *
 * It answers VERSION itself and forwards every other call to the node
 * daemon's zmq ROUTER socket, acting as a zmq REQ peer (ZMTP 3.x, NULL
 * mechanism, unix stream socket):
 *
 *   request  "", "PYROUTE2-CNI/1", "KEY=VALUE\n"... (CNI_* env), stdin bytes
 *   reply    "", "<decimal exit status>", stdout bytes
 *
 * Endpoint: env PYROUTE2_CNI_SOCKET, else the top-level "socket" string of
 * the network config on stdin, else ipc:///run/pyroute2-cni/cni.sock.
 * Timeout: env PYROUTE2_CNI_TIMEOUT, else the top-level "timeout" number on
 * stdin, else 5 s for STATUS and 30 s for the other commands.  It bounds the
 * whole call, measured from the start: reading stdin, connect, handshake and
 * reply.  While stdin is read the config's "timeout" is not known yet, so that
 * read is bounded by the env's or the default.  An unreachable or silent
 * daemon yields CNI error 11.  Keep the defaults in sync with [cni]
 * shim_timeout in pyroute2_cni/runtime/config.py.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "zmtp.h"

#define PROTOCOL_TAG "PYROUTE2-CNI/1"
#define DEFAULT_ENDPOINT "ipc:///run/pyroute2-cni/cni.sock"
#define DEFAULT_CNI_VERSION "1.1.0"
#define VERSION_REPLY                                                                  \
    "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.3.1\",\"0.4.0\",\"1.0.0\"," \
    "\"1.1.0\"]}\n"
#define HINT "; check that the pyroute2-cni DaemonSet pod runs on this node"
#define MAX_STDIN (16u << 20)
#define MAX_TIMEOUT 86400.0

enum {
    CNI_ERR_ENV = 4,       /* invalid environment variables */
    CNI_ERR_IO = 5,        /* I/O failure */
    CNI_ERR_CONFIG = 7,    /* invalid network config */
    CNI_ERR_TRY_LATER = 11 /* try again later */
};

static const char *const forwarded_env[] = {
    "CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH", NULL,
};

/* ---------------------------------------------------------------- output */

struct buf {
    char *p;
    size_t len, cap;
};

static void write_fd(int fd, const char *p, size_t n, int *ok)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            *ok = 0;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static void die_oom(void)
{
    static const char msg[] = "{\"cniVersion\":\"" DEFAULT_CNI_VERSION "\",\"code\":5,"
                              "\"msg\":\"pyroute2-cni shim: out of memory\"}\n";
    int ok = 1;
    write_fd(1, msg, sizeof msg - 1, &ok);
    _exit(1);
}

static void buf_reserve(struct buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra) {
        if (cap > SIZE_MAX / 2)
            die_oom();
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (p == NULL)
        die_oom();
    b->p = p;
    b->cap = cap;
}

static void buf_put(struct buf *b, const char *s, size_t n)
{
    buf_reserve(b, n + 1);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_puts(struct buf *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at p (NUL terminated), 0 if invalid. */
static size_t utf8_len(const unsigned char *p)
{
    size_t n;
    uint32_t cp;
    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xC2 && p[0] <= 0xDF) {
        n = 2;
        cp = p[0] & 0x1F;
    } else if (p[0] >= 0xE0 && p[0] <= 0xEF) {
        n = 3;
        cp = p[0] & 0x0F;
    } else if (p[0] >= 0xF0 && p[0] <= 0xF4) {
        n = 4;
        cp = p[0] & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* s as a JSON string; control characters escaped, invalid UTF-8 -> U+FFFD. */
static void buf_json_string(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    buf_puts(b, "\"");
    while (*p) {
        size_t n = utf8_len(p);
        if (n == 0) {
            buf_puts(b, "\\ufffd");
            p++;
        } else if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            buf_put(b, esc, 2);
            p++;
        } else if (*p < 0x20 || *p == 0x7f) {
            char esc[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
            buf_put(b, esc, 6);
            p++;
        } else {
            buf_put(b, (const char *)p, n);
            p += n;
        }
    }
    buf_puts(b, "\"");
}

/* Print a CNI error object on stdout and exit 1. */
static void cni_error(const char *version, int code, const char *msg, const char *fmt, ...)
{
    char details[1024];
    char num[16];
    struct buf b = {0};
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(details, sizeof details, fmt, ap);
    va_end(ap);
    snprintf(num, sizeof num, "%d", code);

    buf_puts(&b, "{\"cniVersion\":");
    buf_json_string(&b, version);
    buf_puts(&b, ",\"code\":");
    buf_puts(&b, num);
    buf_puts(&b, ",\"msg\":");
    buf_json_string(&b, msg);
    buf_puts(&b, ",\"details\":");
    buf_json_string(&b, details);
    buf_puts(&b, "}\n");
    int ok = 1;
    write_fd(1, b.p, b.len, &ok);
    exit(1);
}

/* ------------------------------------------------------------ JSON scan */
/*
 * Just enough JSON to read a few top-level keys of the network config.
 * Nested objects/arrays are skipped by depth counting, strings (with their
 * escapes) are skipped whole, so a "socket" key inside a nested object or a
 * string never matches.  Validation is the daemon's job.
 */

static const char *skip_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p points at '"'; returns the position after the closing quote. */
static const char *skip_string(const char *p, const char *e)
{
    for (p++; p < e; p++) {
        if (*p == '"')
            return p + 1;
        if (*p == '\\' && ++p >= e)
            return NULL;
    }
    return NULL;
}

static const char *skip_value(const char *p, const char *e)
{
    if (p >= e)
        return NULL;
    if (*p == '"')
        return skip_string(p, e);
    if (*p == '{' || *p == '[') {
        size_t depth = 0;
        while (p < e) {
            if (*p == '"') {
                p = skip_string(p, e);
                if (p == NULL)
                    return NULL;
                continue;
            }
            if (*p == '{' || *p == '[') {
                depth++;
            } else if (*p == '}' || *p == ']') {
                if (--depth == 0)
                    return p + 1;
            }
            p++;
        }
        return NULL;
    }
    const char *s = p; /* number, true, false, null */
    while (p < e && (isalnum((unsigned char)*p) || *p == '-' || *p == '+' || *p == '.'))
        p++;
    return p > s ? p : NULL;
}

static int hex4(const char *p, const char *e, uint32_t *out)
{
    uint32_t v = 0;
    if (e - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        char ch = p[i];
        v <<= 4;
        if (ch >= '0' && ch <= '9')
            v |= (uint32_t)(ch - '0');
        else if (ch >= 'a' && ch <= 'f')
            v |= (uint32_t)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F')
            v |= (uint32_t)(ch - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/*
 * Decode the JSON string at p (pointing at '"') into out as UTF-8, NUL
 * terminated.  Fails on malformed input, overflow of cap, or an embedded NUL.
 */
static int decode_string(const char *p, const char *e, char *out, size_t cap)
{
    size_t n = 0;
    for (p++; p < e;) {
        unsigned char ch = (unsigned char)*p++;
        uint32_t cp;
        if (ch == '"') {
            out[n] = '\0';
            return 0;
        }
        if (ch < 0x20)
            return -1;
        if (ch != '\\') {
            if (n + 1 >= cap)
                return -1;
            out[n++] = (char)ch;
            continue;
        }
        if (p >= e)
            return -1;
        switch (*p++) {
        case '"': cp = '"'; break;
        case '\\': cp = '\\'; break;
        case '/': cp = '/'; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            if (hex4(p, e, &cp) < 0)
                return -1;
            p += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return -1;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (e - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, e, &lo) < 0 ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return -1;
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            break;
        default:
            return -1;
        }
        if (cp == 0 || n + 5 >= cap)
            return -1;
        if (cp < 0x80) {
            out[n++] = (char)cp;
        } else if (cp < 0x800) {
            out[n++] = (char)(0xC0 | (cp >> 6));
            out[n++] = (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out[n++] = (char)(0xE0 | (cp >> 12));
            out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            out[n++] = (char)(0x80 | (cp & 0x3F));
        } else {
            out[n++] = (char)(0xF0 | (cp >> 18));
            out[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
            out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            out[n++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    return -1;
}

/*
 * Find the value of the top-level `key` in the JSON object [doc, doc+len).
 * The last occurrence wins (as with Python's json).  Returns 0 and the value
 * span when found in a well-formed top-level object, -1 otherwise.
 */
static int json_get(const char *doc, size_t len, const char *key, const char **val,
                    const char **vend)
{
    const char *p = doc, *e = doc + len;
    int found = 0;

    if (len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
        p += 3;
    p = skip_ws(p, e);
    if (p >= e || *p != '{')
        return -1;
    p = skip_ws(p + 1, e);
    if (p < e && *p == '}')
        return -1;
    for (;;) {
        char name[64];
        if (p >= e || *p != '"')
            return -1;
        int named = decode_string(p, e, name, sizeof name) == 0;
        p = skip_string(p, e);
        if (p == NULL)
            return -1;
        p = skip_ws(p, e);
        if (p >= e || *p != ':')
            return -1;
        p = skip_ws(p + 1, e);
        const char *v = p;
        p = skip_value(p, e);
        if (p == NULL)
            return -1;
        if (named && strcmp(name, key) == 0) {
            *val = v;
            *vend = p;
            found = 1;
        }
        p = skip_ws(p, e);
        if (p < e && *p == ',') {
            p = skip_ws(p + 1, e);
            continue;
        }
        if (p < e && *p == '}')
            return found ? 0 : -1;
        return -1;
    }
}

/* Parse a JSON-grammar number of seconds in (0, MAX_TIMEOUT]. */
static int parse_seconds(const char *s, size_t n, double *out)
{
    char tmp[64];
    size_t i = 0;
#define DIGIT(k) ((k) < n && s[k] >= '0' && s[k] <= '9')
    if (n == 0 || n >= sizeof tmp)
        return -1;
    if (s[i] == '-')
        i++;
    if (!DIGIT(i))
        return -1;
    if (s[i] == '0')
        i++;
    else
        while (DIGIT(i))
            i++;
    if (i < n && s[i] == '.') {
        i++;
        if (!DIGIT(i))
            return -1;
        while (DIGIT(i))
            i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (!DIGIT(i))
            return -1;
        while (DIGIT(i))
            i++;
    }
#undef DIGIT
    if (i != n)
        return -1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    double d = strtod(tmp, NULL);
    if (!(d > 0.0) || d > MAX_TIMEOUT)
        return -1;
    *out = d;
    return 0;
}

/* ----------------------------------------------------------------- stdin */

static int read_stdin(struct buf *b, int64_t deadline, char *err, size_t errcap)
{
    for (;;) {
        int64_t left = deadline - zmtp_now_ms();
        if (left <= 0) {
            snprintf(err, errcap, "stdin was not closed within the timeout");
            return -1;
        }
        struct pollfd p = {.fd = 0, .events = POLLIN, .revents = 0};
        int r = poll(&p, 1, left > 1000000 ? 1000000 : (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errcap, "poll stdin: %s", strerror(errno));
            return -1;
        }
        if (r == 0)
            continue;
        if (p.revents & POLLNVAL) /* no stdin at all: an empty config */
            return 0;
        buf_reserve(b, 65536);
        ssize_t n = read(0, b->p + b->len, b->cap - b->len - 1);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            snprintf(err, errcap, "read stdin: %s", strerror(errno));
            return -1;
        }
        b->len += (size_t)n;
        if (b->len > MAX_STDIN) {
            snprintf(err, errcap, "stdin is larger than %u bytes", MAX_STDIN);
            return -1;
        }
    }
}

/* ------------------------------------------------------------------ main */

/* Exit status from the reply's status frame, or -1 when malformed. */
static int parse_status(const unsigned char *s, size_t n)
{
    size_t i = 0;
    long v = 0;
    int neg = 0;
    if (n > 0 && s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i == n || n - i > 12)
        return -1;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (neg && v != 0)
        return 1;
    return v <= 255 ? (int)v : 1;
}

int main(void)
{
    const int64_t start = zmtp_now_ms(); /* every wait below ends by start + timeout */
    const char *command = getenv("CNI_COMMAND");
    char version[64] = DEFAULT_CNI_VERSION;

    if (command == NULL || *command == '\0')
        cni_error(version, CNI_ERR_ENV, "invalid environment variables",
                  "CNI_COMMAND is not set");
    if (strcmp(command, "VERSION") == 0) {
        int ok = 1;
        write_fd(1, VERSION_REPLY, sizeof VERSION_REPLY - 1, &ok);
        return ok ? 0 : 1;
    }

    /* Timeout: env wins over the config; default depends on the command. */
    double timeout = strcmp(command, "STATUS") == 0 ? 5.0 : 30.0;
    int timeout_from_env = 0;
    const char *env_timeout = getenv("PYROUTE2_CNI_TIMEOUT");
    if (env_timeout != NULL && *env_timeout != '\0') {
        if (parse_seconds(env_timeout, strlen(env_timeout), &timeout) < 0)
            cni_error(version, CNI_ERR_ENV, "invalid environment variables",
                      "PYROUTE2_CNI_TIMEOUT=%.64s is not a number of seconds in (0, %g]",
                      env_timeout, MAX_TIMEOUT);
        timeout_from_env = 1;
    }

    struct buf in = {0};
    char err[256];
    buf_reserve(&in, 1);
    if (read_stdin(&in, start + (int64_t)(timeout * 1000.0 + 0.5), err, sizeof err) < 0)
        cni_error(version, CNI_ERR_IO, "cannot read the network configuration", "%s", err);

    const char *v, *ve;
    if (json_get(in.p, in.len, "cniVersion", &v, &ve) == 0 && *v == '"') {
        char tmp[sizeof version];
        if (decode_string(v, ve, tmp, sizeof tmp) == 0)
            memcpy(version, tmp, sizeof tmp);
    }

    if (!timeout_from_env && json_get(in.p, in.len, "timeout", &v, &ve) == 0 &&
        parse_seconds(v, (size_t)(ve - v), &timeout) < 0)
        cni_error(version, CNI_ERR_CONFIG, "invalid network config",
                  "\"timeout\" must be a number of seconds in (0, %g]", MAX_TIMEOUT);

    /* Endpoint: env wins over the config. */
    static char endpoint_buf[512];
    const char *endpoint = getenv("PYROUTE2_CNI_SOCKET");
    int bad_code = CNI_ERR_ENV;
    const char *bad_msg = "invalid environment variables";
    if (endpoint == NULL || *endpoint == '\0') {
        endpoint = DEFAULT_ENDPOINT;
        bad_code = CNI_ERR_CONFIG;
        bad_msg = "invalid network config";
        if (json_get(in.p, in.len, "socket", &v, &ve) == 0) {
            if (*v != '"' || decode_string(v, ve, endpoint_buf, sizeof endpoint_buf) < 0)
                cni_error(version, bad_code, bad_msg,
                          "\"socket\" must be a string like \"" DEFAULT_ENDPOINT "\"");
            endpoint = endpoint_buf;
        }
    }
    if (strncmp(endpoint, "ipc://", 6) != 0 || endpoint[6] == '\0')
        cni_error(version, bad_code, bad_msg,
                  "socket %.300s is not supported: only ipc:// endpoints are", endpoint);

    /* Environment frame. */
    struct buf envf = {0};
    buf_reserve(&envf, 1);
    for (const char *const *k = forwarded_env; *k != NULL; k++) {
        const char *val = getenv(*k);
        if (val == NULL)
            continue;
        if (strchr(val, '\n') != NULL)
            cni_error(version, CNI_ERR_ENV, "invalid environment variables",
                      "%s contains a newline", *k);
        buf_puts(&envf, *k);
        buf_puts(&envf, "=");
        buf_puts(&envf, val);
        buf_puts(&envf, "\n");
    }

    /* Talk to the daemon. */
    static const char *const peer_types[] = {"ROUTER", "REP", NULL};
    struct zmtp_conn conn = {.fd = -1};
    struct zmtp_msg reply = {.count = 0};
    struct zmtp_frame req[4] = {
        {(unsigned char *)"", 0},
        {(unsigned char *)PROTOCOL_TAG, sizeof PROTOCOL_TAG - 1},
        {(unsigned char *)envf.p, envf.len},
        {(unsigned char *)in.p, in.len},
    };
    char msg[400];
    snprintf(msg, sizeof msg, "pyroute2-cni daemon is not answering on %.300s", endpoint);

    int64_t deadline = start + (int64_t)(timeout * 1000.0 + 0.5);
    const char *stage = "connect";
    int r = zmtp_connect(&conn, endpoint + 6, deadline);
    if (r == ZMTP_OK) {
        stage = "handshake";
        r = zmtp_handshake(&conn, "REQ", peer_types);
    }
    if (r == ZMTP_OK) {
        stage = "sending the request";
        r = zmtp_send(&conn, req, 4);
    }
    if (r == ZMTP_OK) {
        stage = "reply";
        r = zmtp_recv(&conn, &reply);
    }
    zmtp_close(&conn);
    if (r == ZMTP_TIMEOUT && strcmp(stage, "reply") == 0)
        cni_error(version, CNI_ERR_TRY_LATER, msg, "no reply within %g s" HINT, timeout);
    if (r == ZMTP_TIMEOUT)
        cni_error(version, CNI_ERR_TRY_LATER, msg, "%s: no answer within %g s" HINT, stage,
                  timeout);
    if (r != ZMTP_OK)
        cni_error(version, CNI_ERR_TRY_LATER, msg, "%s: %s" HINT, stage, conn.err);

    int status = -1;
    if (reply.count == 3 && reply.frames[0].len == 0)
        status = parse_status(reply.frames[1].data, reply.frames[1].len);
    if (status < 0) {
        snprintf(msg, sizeof msg, "pyroute2-cni daemon sent an invalid reply on %.300s",
                 endpoint);
        cni_error(version, CNI_ERR_TRY_LATER, msg,
                  "expected an empty delimiter, a decimal status and the output "
                  "(%zu frames received)" HINT,
                  reply.count);
    }
    int ok = 1;
    write_fd(1, (const char *)reply.frames[2].data, reply.frames[2].len, &ok);
    return ok ? status : 1;
}
