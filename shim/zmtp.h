/*
 * Minimal ZMTP 3.x client (NULL mechanism) over a unix stream socket.
 *
 * Only what the pyroute2-cni shim needs: connect with a deadline, the
 * greeting + READY handshake, sending one multipart message and receiving
 * one multipart message.  Every blocking step is bounded by the deadline
 * stored in the connection.
 */
#ifndef PYROUTE2_CNI_ZMTP_H
#define PYROUTE2_CNI_ZMTP_H

#include <stddef.h>
#include <stdint.h>

enum {
    ZMTP_OK = 0,
    ZMTP_ERR = -1,     /* protocol or system error; see conn.err */
    ZMTP_TIMEOUT = -2, /* deadline reached */
};

#define ZMTP_MAX_FRAMES 16

struct zmtp_frame {
    unsigned char *data; /* owned by the message when received */
    size_t len;
};

struct zmtp_msg {
    struct zmtp_frame frames[ZMTP_MAX_FRAMES];
    size_t count;
};

struct zmtp_conn {
    int fd;
    int64_t deadline; /* CLOCK_MONOTONIC, milliseconds */
    size_t max_msg;   /* upper bound for the total size of a received message */
    size_t rpos, rlen;
    unsigned char rbuf[4096];
    char err[256];
};

int64_t zmtp_now_ms(void);

/* Connect to the unix socket at path ("@name" = abstract namespace). */
int zmtp_connect(struct zmtp_conn *c, const char *path, int64_t deadline);

/*
 * Exchange greetings and READY commands.  `peer_types` is a NULL terminated
 * list of Socket-Type values accepted from the peer.
 */
int zmtp_handshake(struct zmtp_conn *c, const char *socket_type,
                   const char *const *peer_types);

/* Send one message; every frame but the last carries the MORE flag. */
int zmtp_send(struct zmtp_conn *c, const struct zmtp_frame *frames, size_t n);

/* Receive one message (commands in between are handled or skipped). */
int zmtp_recv(struct zmtp_conn *c, struct zmtp_msg *m);

void zmtp_msg_free(struct zmtp_msg *m);
void zmtp_close(struct zmtp_conn *c);

#endif
