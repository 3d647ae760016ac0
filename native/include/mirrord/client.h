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
 *   mr_client__rules     {"op": "config"}: the whole table for one ingress interface, as
 *                        `mirrord forward` computes it (the default rule, a rule per VLAN
 *                        input on it, each with its session's capture filter), with the
 *                        configuration generation and the daemon's instance token, ready
 *                        for mr_tap__set_rules().  Call it from a control thread every so
 *                        often (the reference forwarder: every 0.25 s) and
 *                        mr_tap__set_rules() when (instance, generation) changed.
 *   mr_client__rule      the older call: the default rule only, no filter, no VLAN rules
 *                        (kept for compatibility; a filtered session would be mirrored
 *                        unfiltered through it, VLAN inputs ignored).
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

#include "mirrord/tap.h" /* struct mr_tap_vlan_rule, struct mr_tap_insn and their bounds */

#ifdef __cplusplus
extern "C" {
#endif

#define MR_CLIENT_TIMEOUT_MS 5000      /* connect, each send and each receive */
#define MR_CLIENT_MAX_MESSAGE (1u << 20) /* the largest reply body taken (the daemon's limit) */
#define MR_CLIENT_MAX_DEPTH 16         /* msgpack nesting taken in a reply */
#define MR_CLIENT_MAX_INSTANCE 64      /* the instance token's bytes, its NUL included */

struct mr_client;

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

/* DEFAULT RULE ONLY, NO FILTER, NO VLAN RULES: kept for compatibility; use
 * mr_client__rules().  The rule of the session whose "input" names ingress: out->session_id
 * 0 (mirror nothing) when there is none; rate, run_length and max_len (the session's
 * max_packet_length) otherwise.  It ignores the session's filter_program (a filtered
 * session is mirrored unfiltered) and its VLAN inputs ("inputs").  generation and instance
 * (NUL-terminated, instance_len bytes at most) may be NULL. */
int mr_client__rule(struct mr_client *c, const char *ingress, struct mr_tap_rule *out,
		    uint64_t *generation, char *instance, size_t instance_len, char *err, size_t errlen);

/*
 * An ingress's whole table, in the caller's memory: a fixed capacity, so nothing the daemon
 * says makes the helper allocate more than this (it is about 130 KiB: allocate it, or make
 * it static, rather than put it on a small stack).  rules[k].filter points into insns of
 * the SAME struct: do not copy the struct (a copy's pointers still point into the original);
 * pass it to mr_tap__set_rules(tap, out->rules, out->n), which copies what it needs, so the
 * struct may be reused for the next poll at once.
 */
struct mr_client_rules {
	uint64_t generation;                 /* the daemon's configuration generation */
	char instance[MR_CLIENT_MAX_INSTANCE]; /* its instance token, NUL-terminated */
	uint32_t n;                          /* rules[0 .. n): 0 (no session takes ingress) to
					      * MR_TAP_MAX_VLAN_RULES + 1 */
	uint32_t ninsns;                     /* insns[0 .. ninsns) hold the rules' filters */
	struct mr_tap_vlan_rule rules[MR_TAP_MAX_VLAN_RULES + 1];
	struct mr_tap_insn insns[MR_TAP_MAX_TABLE_INSNS];
};

/*
 * {"op": "config"} and the table for ingress, computed as the reference forwarder does
 * (mirrord/forwarder/follow.py, rules_for): first the default rule (vid 0): the session
 * with the input (ingress, VLAN 0), else the VLAN input whose label ("name") is ingress (a
 * VLAN device forwarded by itself); then one rule per VLAN input on ingress, by VID.  Each
 * rule carries its session's id, rate, run_length, max_packet_length (as max_len) and
 * filter_program (libpcap's struct bpf_insn[], copied into out->insns); flags
 * MR_TAP_RULE_WHEN_LISTENED when the session's "when_listened" is true, else 0.  n 0:
 * no session takes ingress (mr_tap__set_rules with n 0 mirrors nothing).
 *
 * The reply is checked as the reference forwarder checks it, every session, before out is
 * touched: each session's id, rate, run_length and max_packet_length an integer 0 to
 * 2^32-1; "input" a list of str; "inputs" (when present) a list of maps {interface: str,
 * vlan: 0-4094, name: str}; "filter" a str; "filter_program" a bin of whole 8-byte
 * instructions, at most MR_TAP_MAX_INSNS, that libpcap's bpf_validate() accepts.  Beyond
 * that, for this ingress: at most MR_TAP_MAX_VLAN_RULES VLAN inputs, filters of at most
 * MR_TAP_MAX_TABLE_INSNS instructions in all, and no (ingress, VID) claimed twice.  Anything
 * else: -EPROTO with one line naming the field, out unchanged.  -EINVAL: a bad ingress
 * (1-255 bytes); -EREMOTEIO: the daemon refused (its reason in err); transport errors as
 * mr_client__rule.  On success out holds everything mr_tap__set_rules() needs.
 */
int mr_client__rules(struct mr_client *c, const char *ingress, struct mr_client_rules *out, char *err,
		     size_t errlen);

#ifdef __cplusplus
}
#endif

#endif /* MIRRORD_CLIENT_H */
