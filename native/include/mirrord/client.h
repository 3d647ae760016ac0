/* SPDX-License-Identifier: MIT */
/*
 * The registration helper of the embeddable tap: a blocking client of the daemon's control
 * socket (docs/control-protocol.md) for a forwarder that does not want to speak msgpack.
 *
 *   mr_client__connect   connect (SOCK_STREAM, close-on-exec, every send/receive bounded
 *                        by a timeout: MR_CLIENT_TIMEOUT_MS)
 *   mr_client__register  hand a tap's ring to the daemon: its ring fd and eventfd travel as
 *                        SCM_RIGHTS with {"op": "register", "path": P} when the ring is a
 *                        file, else {"op": "register", "name": N}
 *   mr_client__rule      {"op": "config"}: the accepted rule for one ingress interface, with
 *                        the configuration generation and the daemon's instance token.
 *                        Call it from a control thread every so often (the reference
 *                        forwarder: every 0.25 s) and mr_tap__set_rule() when
 *                        (instance, generation) changed.
 *
 * Setup calls, never for the packet thread: each may block up to the timeout.  Every call
 * returns 0 or a negative errno; err (may be NULL) gets one line naming the reason: the
 * daemon's own error text for a refused request, or what was wrong with a reply (-EPROTO).
 * A connection is not for several threads at once.
 */
#ifndef MIRRORD_CLIENT_H
#define MIRRORD_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MR_CLIENT_TIMEOUT_MS 5000      /* connect, each send and each receive */
#define MR_CLIENT_MAX_MESSAGE (1u << 20) /* the largest reply body taken (the daemon's limit) */
#define MR_CLIENT_MAX_DEPTH 16         /* msgpack nesting taken in a reply */

struct mr_client;
struct mr_tap;
struct mr_tap_rule;

int mr_client__connect(struct mr_client **out, const char *control_socket, char *err, size_t errlen);
void mr_client__close(struct mr_client *c);

/* The tap's ring (mr_tap__ring_fds, mr_tap__ring_path) registered under name (1-64
 * printable characters without '/'; ignored for a ring file, which the daemon names
 * after the file).  The daemon keeps its own duplicates: the tap keeps its descriptors. */
int mr_client__register(struct mr_client *c, struct mr_tap *t, const char *name, char *err,
			size_t errlen);

/* The same for a ring made without a tap (mr_prod__create): ring_fd, eventfd (-1: none,
 * the daemon then polls), path (NULL for a memfd ring). */
int mr_client__register_fds(struct mr_client *c, int ring_fd, int eventfd, const char *path,
			    const char *name, char *err, size_t errlen);

/* The rule for ingress from the daemon's accepted configuration: out->session_id 0 (mirror
 * nothing) when no session has ingress among its inputs; rate, run_length and max_len
 * (the session's max_packet_length) otherwise.  generation and instance (NUL-terminated,
 * instance_len bytes at most) may be NULL. */
int mr_client__rule(struct mr_client *c, const char *ingress, struct mr_tap_rule *out,
		    uint64_t *generation, char *instance, size_t instance_len, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif /* MIRRORD_CLIENT_H */
