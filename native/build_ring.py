"""cffi build script (out-of-line API mode) for mirrord._ring: the mirror ring
(native/include/mirrord/ring.h), its delivery to outputs (drain.h), the remote outputs' encapsulation (encap.h) and the SIGBUS guard
(guard.h).  Needs nothing but libc: the daemon, and any producer that only writes rings,
install and run without libxdp or libbpf (the forwarder is mirrord._xdp, build_xdp.py).

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
#define MR_TAP_MAX_VLAN_RULES ...
#define MR_TAP_MAX_TABLE_INSNS ...
#define MR_REC_F_PAD ...
#define MR_REC_F_TRUNCATED ...
#define MR_DRAIN_WRITE ...
#define MR_DRAIN_WRITE_L3 ...
#define MR_DRAIN_SENDMMSG ...
#define MR_DRAIN_ENCAP ...
#define MR_ENCAP_VXLAN ...
#define MR_ENCAP_GENEVE ...
#define MR_ENCAP_ERSPAN2 ...
#define MR_ENCAP_ERSPAN3 ...
#define MR_ENCAP_MAX_COLLECTORS ...
#define MR_ENCAP_MAX_PORTS ...
#define MR_ENCAP_PORTS_DEFAULT ...
#define MR_ENCAP_BATCH ...
#define MR_VXLAN_PORT ...
#define MR_GENEVE_PORT ...
#define MR_LAT_BUCKETS ...

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

struct mr_encap;

struct mr_route {
    uint32_t session_id;
    int32_t fd;
    int32_t mode;
    struct mr_encap *encap;
};

struct mr_collector_stats {
    uint64_t pkts, bytes;
    uint64_t drop_busy;
    uint64_t drop_unreachable;
    uint64_t drop_error;
    uint64_t truncated_mtu;
    uint64_t icmp_errors;
    uint32_t mtu;
    int32_t last_errno;
    uint32_t hold_ms;
    ...;
};

struct mr_encap_config {
    uint32_t kind;
    uint32_t vni;
    uint16_t port;
    uint16_t session_id;
    int32_t ttl;
    int32_t dscp;
    uint32_t spread;
    uint32_t source_ports;
};

struct mr_drain_stats {
    uint64_t pkts, bytes;
    uint64_t drop_busy;
    uint64_t drop_error;
    uint64_t drop_not_ip;
    uint64_t drop_no_output;
    uint64_t truncated;
    uint64_t lat[...];
    uint64_t lat_sum_ns;
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
void mr_cons__set_listened(struct mr_cons *c, const uint32_t *ids, uint32_t n);
int mr_prod__listened(const struct mr_prod *p, uint32_t session_id);
int mr_cons__drain(struct mr_cons *c, const struct mr_route *routes, struct mr_drain_stats *stats,
                   unsigned nroutes, unsigned budget, struct mr_drain_totals *totals);
uint64_t mr_lat__bound_ns(unsigned i);
void mr_drain_stats__add(struct mr_drain_stats *acc, const struct mr_drain_stats *src, unsigned n);
unsigned mr_drain_stats__next_errno(const struct mr_drain_stats *s, unsigned i, unsigned n);

struct mr_encap *mr_encap__new(const struct mr_encap_config *cfg);
void mr_encap__free(struct mr_encap *e);
int mr_encap__add(struct mr_encap *e, int family, const uint8_t *addr);
int mr_encap__open(struct mr_encap *e, const uint8_t *local, unsigned local_len, char *err, size_t errlen);
void mr_encap__close(struct mr_encap *e);
void mr_encap__refresh(struct mr_encap *e);
uint32_t mr_flow__hash(const uint8_t *frame, uint32_t len);
unsigned mr_encap__pick(const struct mr_encap *e, uint32_t flow_hash);
int mr_encap__fd(const struct mr_encap *e, unsigned i);
/* the per-collector counters, copied out (the struct stays opaque to Python) */
int mr_encap__stats(const struct mr_encap *e, unsigned i, struct mr_collector_stats *out);

struct mr_drain_job {
    struct mr_cons *c;
    const struct mr_route *routes;
    struct mr_drain_stats *stats;
    struct mr_drain_totals *totals;
    uint32_t nroutes;
    int32_t result;
    uint64_t busy_ns;
    uint64_t corrupt;
};
uint64_t mr_cons__drain_set(struct mr_drain_job *jobs, unsigned n, unsigned budget, uint64_t now_ns,
                            uint64_t idle_ns, unsigned *attention);

/* libc, for the daemon's shared poll timer (os.timerfd_* is Python 3.13+) */
#define CLOCK_MONOTONIC ...
#define TFD_NONBLOCK ...
#define TFD_CLOEXEC ...
struct timespec { long tv_sec; long tv_nsec; ...; };
struct itimerspec { struct timespec it_interval; struct timespec it_value; };
int timerfd_create(int clockid, int flags);
int timerfd_settime(int fd, int flags, const struct itimerspec *new_value, struct itimerspec *old_value);

void mr_ring__counters(const struct mr_ring_hdr *h, struct mr_ring_counters *out);
int mr_ring__probe(int fd, struct mr_ring_counters *out, char *err, size_t errlen);
int mr_frame__l3_offset(const uint8_t *frame, uint32_t len, uint16_t *ethertype);

/* libpcap, to compile a session's capture filter (mirrord/filter.py) */
#define DLT_EN10MB ...
#define PCAP_NETMASK_UNKNOWN ...
typedef struct pcap pcap_t;
struct bpf_insn { uint16_t code; uint8_t jt; uint8_t jf; uint32_t k; };
struct bpf_program { unsigned int bf_len; struct bpf_insn *bf_insns; };
pcap_t *pcap_open_dead(int linktype, int snaplen);
int pcap_compile(pcap_t *p, struct bpf_program *fp, const char *str, int optimize, uint32_t netmask);
char *pcap_geterr(pcap_t *p);
void pcap_freecode(struct bpf_program *fp);
void pcap_close(pcap_t *p);
unsigned int bpf_filter(const struct bpf_insn *pc, const unsigned char *pkt, unsigned int wirelen,
                        unsigned int buflen);
int bpf_validate(const struct bpf_insn *f, int len);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "mirrord._ring",
    '#include "mirrord/ring.h"\n#include "mirrord/drain.h"\n#include "mirrord/encap.h"\n#include "mirrord/tap.h"\n#include <pcap/pcap.h>\n'
    '#include <sys/timerfd.h>\n#include <time.h>\n',
    # paths relative to the project root, where setuptools runs this script
    sources=["native/src/ring.c", "native/src/guard.c", "native/src/drain.c", "native/src/encap.c"],
    include_dirs=["native/include"],
    libraries=["pcap", "pthread"],
    # hidden: the mr_* symbols stay inside this module (only PyInit__ring is exported), so
    # they can never interpose on, or be interposed by, the copy of the ring built into
    # mirrord._xdp (see build_xdp.py)
    extra_compile_args=["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                        "-fvisibility=hidden"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
