"""cffi build script (out-of-line API mode) for mirrord._xdp: the reference AF_XDP forwarder
(native/include/mirrord/forward.h), linked against libxdp and libbpf.  Only `mirrord forward`
loads it; the daemon and the ring (mirrord._ring, build_ring.py) never do.

One guard per process.  forward.c writes its rings through the ring's C code, and a named
ring needs the SIGBUS guard (guard.c): a process-wide table and a SIGBUS handler, static
state of whichever copy of guard.c the caller was linked with.  This module compiles its
own ring.c and guard.c and exposes none of them: its cdef is forward.h alone (plus the ring
ABI version its rings are written in), so from Python the only way to reach this module's
ring is through mr_fwd__*.  The forwarder's process maps its rings through mr_fwd__set_ring
only, and never maps a ring through mirrord._ring: one table, one handler.

Why not share mirrord._ring's copy instead: Python loads extension modules RTLD_LOCAL, so
_xdp cannot resolve _ring's symbols without linking against the path of the other .so
(fragile across editable, wheel and build-tree installs) or passing function pointers at
import (a run-time protocol for what the linker does).  Both modules are built with
-fvisibility=hidden so that neither copy can interpose on the other if one is ever loaded
RTLD_GLOBAL: each module always calls its own code.

If both copies did guard mappings in one process (a test process that runs a Forwarder and
also attaches to a named ring with mirrord.ring, say), each still repairs its own mappings:
a handler that finds no mapping of its own chains to the one installed before it, so a fault
in either copy's ring reaches the copy that knows it.  What is lost is only a third handler
installed before both (faulthandler's traceback on a SIGBUS that is no ring's), because a
copy that finds the other on top reinstalls itself above it; the process still dies of that
SIGBUS as it should.
"""
from cffi import FFI

CDEF = """
#define MR_RING_ABI_VERSION ...
#define MR_FWD_MAX_PAIRS ...

struct mr_fwd;
struct mr_mirror_cfg {
    uint32_t session_id;
    uint32_t rate;
    uint32_t run_length;
    uint32_t max_len;
    const void *filter;
    uint32_t filter_len;
    uint32_t vid;
    uint32_t flags;
};
#define MR_TAP_RULE_WHEN_LISTENED ...
#define MR_TAP_MAX_VLAN_RULES ...
#define MR_TAP_MAX_TABLE_INSNS ...
struct mr_tap_rule_counters {
    uint32_t vid, session_id;
    uint64_t seen;
    uint64_t filtered;
    uint64_t sampled, pushed, dropped_ring_full, dropped_no_ring, dropped_ring_lost;
    uint64_t skipped_no_listener;
};
struct mr_binding_counters {
    uint64_t rx_packets, rx_bytes;
    uint64_t tx_packets, tx_bytes;
    uint64_t dropped_tx_full;
    uint64_t dropped_tx_down;
    uint64_t mirror_sampled;
    uint64_t mirror_pushed;
    uint64_t mirror_dropped_ring_full;
    uint64_t mirror_dropped_no_ring;
    uint64_t mirror_table_generation;
    uint64_t xdp_rx_dropped;
    uint64_t xdp_rx_invalid_descs;
    uint64_t xdp_rx_ring_full;
    uint64_t xdp_rx_fill_ring_empty_descs;
    uint64_t xdp_tx_invalid_descs;
    uint64_t xdp_tx_ring_empty_descs;
    uint64_t mirror_dropped_ring_lost;
    uint64_t mirror_filtered;
    uint64_t mirror_skipped_no_listener;
};
int mr_fwd__create(struct mr_fwd **out);
int mr_fwd__add_pair(struct mr_fwd *f, const char *a, const char *b, uint32_t queue, int skb_mode,
                     char *err, size_t errlen);
int mr_fwd__set_ring(struct mr_fwd *f, unsigned binding, const char *path, uint32_t data_size,
                     const char *name, char *err, size_t errlen);
int mr_fwd__set_mirror(struct mr_fwd *f, unsigned binding, const struct mr_mirror_cfg *cfg);
int mr_fwd__set_mirrors(struct mr_fwd *f, unsigned binding, const struct mr_mirror_cfg *cfgs, unsigned n);
int mr_fwd__rule_counters(const struct mr_fwd *f, unsigned binding, struct mr_tap_rule_counters *out,
                          unsigned max);
int mr_fwd__start(struct mr_fwd *f);
void mr_fwd__stop(struct mr_fwd *f);
void mr_fwd__destroy(struct mr_fwd *f);
int mr_fwd__binding_info(const struct mr_fwd *f, unsigned binding, int *ifindex, uint32_t *queue);
int mr_fwd__ring_fds(const struct mr_fwd *f, unsigned binding, int *ring_fd, int *efd);
int mr_fwd__ring_lost(const struct mr_fwd *f, unsigned binding, char *reason, size_t len);
void mr_fwd__counters(const struct mr_fwd *f, unsigned binding, struct mr_binding_counters *out);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "mirrord._xdp",
    '#include "mirrord/ring.h"\n#include "mirrord/forward.h"\n',
    # paths relative to the project root, where setuptools runs this script; tap.c: the
    # mirroring rules (include/mirrord/tap.h), the same code libmirrord exports; no drain.c:
    # the forwarder produces, it never delivers
    sources=["native/src/forward.c", "native/src/tap.c", "native/src/ring.c", "native/src/guard.c"],
    include_dirs=["native/include"],
    libraries=["xdp", "bpf", "pcap", "pthread"],
    extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                        "-fvisibility=hidden"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
