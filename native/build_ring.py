"""cffi build script (out-of-line API mode) for mirrord._native.

Run by setuptools through ``cffi_modules`` at ``pip install`` time; nothing is compiled at
import time.  The cdef is plain declarations; constants come from the C compiler.
"""
from cffi import FFI

CDEF = """
#define MR_RING_MAGIC ...
#define MR_RING_ABI_VERSION ...
#define MR_RING_HDR_SIZE ...
#define MR_REC_HDR_SIZE ...
#define MR_RING_MIN_DATA ...
#define MR_RING_MAX_DATA ...
#define MR_RING_DEFAULT_DATA ...
#define MR_FRAME_MAX ...
#define MR_FRAME_DEFAULT ...
#define MR_REC_F_PAD ...
#define MR_REC_F_TRUNCATED ...
#define MR_DRAIN_WRITE ...
#define MR_DRAIN_WRITE_L3 ...
#define MR_DRAIN_SENDMMSG ...

struct mr_ring_hdr { ...; };

struct mr_prod {
    struct mr_ring_hdr *hdr;
    int efd;
    int fd;
    size_t map_len;
    ...;
};

struct mr_cons {
    struct mr_ring_hdr *hdr;
    int efd;
    int fd;
    size_t map_len;
    uint32_t corrupt_why;
    uint64_t corrupt_val;
    ...;
};

struct mr_meta {
    uint32_t wire_len;
    uint32_t ifindex;
    uint32_t session_id;
    uint64_t ts_ns;
};

struct mr_frame {
    const uint8_t *data;
    uint32_t cap_len;
    uint32_t wire_len;
    uint32_t ifindex;
    uint32_t session_id;
    uint64_t seq;
    uint64_t ts_ns;
    uint16_t flags;
};

struct mr_ring_counters {
    uint64_t pushed_pkts, pushed_bytes, drop_full_pkts, drop_full_bytes, truncated_pkts;
    uint64_t wakeups;
    uint64_t consumed_pkts, consumed_bytes, corrupt_events, corrupt_bytes, attaches;
    uint64_t prod, cons;
    uint32_t data_size, max_frame, producer_pid;
    int32_t producer_eventfd;
};

struct mr_route {
    uint32_t session_id;
    int32_t fd;
    int32_t mode;
};

struct mr_drain_stats {
    uint64_t pkts, bytes;
    uint64_t drop_busy;
    uint64_t drop_error;
    uint64_t drop_not_ip;
    uint64_t drop_no_output;
    uint64_t truncated;
    int32_t last_errno;
};

struct mr_drain_totals {
    uint64_t records;
    uint64_t unrouted;
    uint64_t corrupt;
};

int mr_prod__create(struct mr_prod *p, const char *path, uint32_t data_size, uint32_t max_frame,
                    const char *name, char *err, size_t errlen);
void mr_prod__destroy(struct mr_prod *p, int unlink_file);
int mr_prod__push(struct mr_prod *p, const void *frame, uint32_t len, const struct mr_meta *m);
void mr_prod__submit(struct mr_prod *p);

int mr_cons__attach(struct mr_cons *c, int fd, int efd, char *err, size_t errlen);
int mr_cons__attach_max(struct mr_cons *c, int fd, int efd, uint64_t max_data, char *err, size_t errlen);
int mr_prod__lost(const struct mr_prod *p);
int mr_cons__lost(const struct mr_cons *c);
int mr_prod__lost_reason(const struct mr_prod *p, char *buf, size_t len);
int mr_cons__lost_reason(const struct mr_cons *c, char *buf, size_t len);
void mr_cons__detach(struct mr_cons *c);
unsigned mr_cons__peek(struct mr_cons *c, struct mr_frame *frames, unsigned n, uint64_t *corrupt);
void mr_cons__release(struct mr_cons *c);
int mr_cons__corruption(const struct mr_cons *c, char *buf, size_t len);
int mr_cons__prepare_sleep(struct mr_cons *c);
int mr_cons__drain(struct mr_cons *c, const struct mr_route *routes, struct mr_drain_stats *stats,
                   unsigned nroutes, unsigned budget, struct mr_drain_totals *totals);
void mr_drain_stats__add(struct mr_drain_stats *acc, const struct mr_drain_stats *src, unsigned n);
unsigned mr_drain_stats__next_errno(const struct mr_drain_stats *s, unsigned i, unsigned n);

void mr_ring__counters(const struct mr_ring_hdr *h, struct mr_ring_counters *out);
int mr_ring__probe(int fd, struct mr_ring_counters *out, char *err, size_t errlen);
int mr_frame__l3_offset(const uint8_t *frame, uint32_t len, uint16_t *ethertype);

/* forward.h: the AF_XDP fast path */
#define MR_FWD_MAX_PAIRS ...
struct mr_fwd;
struct mr_mirror_cfg {
    uint32_t session_id;
    uint32_t rate;
    uint32_t run_length;
    uint32_t max_len;
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
};
int mr_fwd__create(struct mr_fwd **out);
int mr_fwd__add_pair(struct mr_fwd *f, const char *a, const char *b, uint32_t queue, int skb_mode,
                     char *err, size_t errlen);
int mr_fwd__set_ring(struct mr_fwd *f, unsigned binding, const char *path, uint32_t data_size,
                     const char *name, char *err, size_t errlen);
int mr_fwd__set_mirror(struct mr_fwd *f, unsigned binding, const struct mr_mirror_cfg *cfg);
int mr_fwd__start(struct mr_fwd *f);
void mr_fwd__stop(struct mr_fwd *f);
void mr_fwd__destroy(struct mr_fwd *f);
unsigned mr_fwd__bindings(const struct mr_fwd *f);
int mr_fwd__binding_info(const struct mr_fwd *f, unsigned binding, int *ifindex, uint32_t *queue);
int mr_fwd__ring_fds(const struct mr_fwd *f, unsigned binding, int *ring_fd, int *efd);
int mr_fwd__ring_lost(const struct mr_fwd *f, unsigned binding, char *reason, size_t len);
void mr_fwd__counters(const struct mr_fwd *f, unsigned binding, struct mr_binding_counters *out);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "mirrord._native",
    '#include "mirrord/ring.h"\n#include "mirrord/drain.h"\n#include "mirrord/forward.h"\n',
    # paths relative to the project root, where setuptools runs this script
    sources=["native/src/ring.c", "native/src/guard.c", "native/src/drain.c", "native/src/forward.c"],
    include_dirs=["native/include"],
    libraries=["xdp", "bpf", "pthread"],
    extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
