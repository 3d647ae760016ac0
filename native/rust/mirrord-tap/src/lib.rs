//! The mirrord embeddable mirror tap for Rust dataplanes: a safe wrapper over libmirrord's
//! `mirrord/tap.h` (the tap: sampling, run length, truncation, one ring submit per burst,
//! counters) and `mirrord/client.h` (registering the tap's ring with the daemon and
//! fetching the rule for an ingress).  docs/embedding.md, section "Rust".
//!
//! Threads.  A [`Tap`] is the packet thread's: [`Tap::offer_burst`] takes `&mut self`, and a
//! `Tap` is `Send` (it may be moved to the thread that will own it) but not `Sync`, so two
//! threads can never offer on one tap (the ring is single-producer).  What the C API allows
//! from any thread -- setting the rule, reading the counters, the ring's descriptors -- is
//! on [`TapHandle`], which is `Send + Sync + Clone`: `tap.handle()` gives one to a control
//! thread.  The C tap is destroyed when the `Tap` and every handle are gone; the `Tap`
//! going means the packet thread stopped offering, which is what `mr_tap__destroy` needs.
//! (A `Tap` derefs to its handle, so `tap.set_rule(..)` and `tap.counters()` work too.)
//!
//! ```no_run
//! use mirrord_tap::{Client, Tap};
//! let mut tap = Tap::new(None, 0, "fwd-q0")?;          // a memfd ring, 4 MiB
//! let mut client = Client::connect("/run/mirrord/control.sock")?;
//! client.register(&tap, "fwd-q0")?;
//! let (rule, _generation) = client.rule("eth1")?;
//! tap.set_rule(rule);
//! let frame = [0u8; 64];
//! tap.offer_burst(&[&frame[..]], 2, 0);
//! # Ok::<(), std::io::Error>(())
//! ```
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::io;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};
use std::sync::Arc;

/// The hand-written declarations of tap.h and client.h (the layouts are the C ABI).
pub mod ffi {
    use std::ffi::{c_char, c_int, c_uint, c_void};

    #[repr(C)]
    pub struct mr_tap {
        _opaque: [u8; 0],
    }
    #[repr(C)]
    pub struct mr_client {
        _opaque: [u8; 0],
    }
    /// `struct mr_tap_rule`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct mr_tap_rule {
        pub session_id: u32,
        pub rate: u32,
        pub run_length: u32,
        pub max_len: u32,
    }
    #[repr(C)]
    pub struct mr_tap_frag {
        pub data: *const c_void,
        pub len: u32,
    }
    #[repr(C)]
    pub struct mr_tap_frame {
        pub frags: *const mr_tap_frag,
        pub nfrags: u32,
    }
    /// `struct mr_tap_counters`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct mr_tap_counters {
        pub seen: u64,
        pub sampled: u64,
        pub pushed: u64,
        pub dropped_ring_full: u64,
        pub dropped_no_ring: u64,
        pub dropped_ring_lost: u64,
        pub rule_generation: u64,
    }

    extern "C" {
        pub fn mr_tap__create(out: *mut *mut mr_tap, ring_path: *const c_char, data_size: u32,
                              name: *const c_char, err: *mut c_char, errlen: usize) -> c_int;
        pub fn mr_tap__create_no_ring(out: *mut *mut mr_tap) -> c_int;
        pub fn mr_tap__destroy(t: *mut mr_tap);
        pub fn mr_tap__set_rule(t: *mut mr_tap, r: *const mr_tap_rule) -> c_int;
        pub fn mr_tap__offer_burst(t: *mut mr_tap, frames: *const mr_tap_frame, n: c_uint, ifindex: u32,
                                   ts_ns: u64) -> c_uint;
        pub fn mr_tap__offer(t: *mut mr_tap, data: *const *const c_void, len: *const u32, n: c_uint,
                             ifindex: u32, ts_ns: u64) -> c_uint;
        pub fn mr_tap__counters(t: *const mr_tap, c: *mut mr_tap_counters);
        pub fn mr_tap__ring_fds(t: *const mr_tap, ring_fd: *mut c_int, eventfd: *mut c_int) -> c_int;
        pub fn mr_tap__ring_path(t: *const mr_tap) -> *const c_char;
        pub fn mr_tap__ring_lost(t: *const mr_tap, reason: *mut c_char, len: usize) -> c_int;

        pub fn mr_client__connect(out: *mut *mut mr_client, control_socket: *const c_char, err: *mut c_char,
                                  errlen: usize) -> c_int;
        pub fn mr_client__close(c: *mut mr_client);
        pub fn mr_client__register(c: *mut mr_client, t: *mut mr_tap, name: *const c_char, err: *mut c_char,
                                   errlen: usize) -> c_int;
        pub fn mr_client__rule(c: *mut mr_client, ingress: *const c_char, out: *mut mr_tap_rule,
                               generation: *mut u64, instance: *mut c_char, instance_len: usize,
                               err: *mut c_char, errlen: usize) -> c_int;
    }
}

/// The rule for a binding's ingress (`struct mr_tap_rule`): `session_id` 0 mirrors nothing;
/// `rate` 0 or 1 every frame, N one in N (the tap's k-th frame when k % N == 0);
/// `run_length` more frames after each hit; `max_len` truncates copies (0: whole frame).
pub type Rule = ffi::mr_tap_rule;
/// The tap's counters, named as in the daemon's status and /metrics: every sampled copy is
/// `pushed + dropped_ring_full + dropped_no_ring + dropped_ring_lost`.
pub type Counters = ffi::mr_tap_counters;

const ERRLEN: usize = 256;

/// A C call's -errno and its one-line message as an io::Error of the same kind.
fn error(rc: c_int, err: &[c_char; ERRLEN]) -> io::Error {
    let kind = io::Error::from_raw_os_error(-rc).kind();
    // SAFETY: the C side NUL-terminates err within ERRLEN (vsnprintf); it starts zeroed.
    let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
    if msg.is_empty() {
        io::Error::from_raw_os_error(-rc)
    } else {
        io::Error::new(kind, msg)
    }
}

fn cstring(what: &str, s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: contains a NUL byte")))
}

struct Raw(NonNull<ffi::mr_tap>);
// SAFETY: what the handle calls (set_rule, counters, ring_fds, ring_path, ring_lost) is
// documented in tap.h as safe from any thread; offering is only reachable through `Tap`.
unsafe impl Send for Raw {}
unsafe impl Sync for Raw {}
impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: the last owner: the Tap (the packet thread's) is gone, so nobody offers.
        unsafe { ffi::mr_tap__destroy(self.0.as_ptr()) }
    }
}

/// The any-thread side of a tap: rule, counters, ring descriptors.  Cheap to clone.
#[derive(Clone)]
pub struct TapHandle {
    raw: Arc<Raw>,
}

impl TapHandle {
    fn ptr(&self) -> *mut ffi::mr_tap {
        self.raw.0.as_ptr()
    }

    /// Swap the tap's rule (lock-free for the packet thread; returns after a short grace
    /// period).  The packet thread takes it up at its next burst (`rule_generation`).
    pub fn set_rule(&self, rule: Rule) {
        // SAFETY: a valid tap and rule; set_rule is any-thread.  It fails only for a NULL
        // rule or ENOMEM, which the C side reports by keeping the old rule.
        let rc = unsafe { ffi::mr_tap__set_rule(self.ptr(), &rule) };
        debug_assert!(rc == 0, "mr_tap__set_rule: {rc}");
    }

    /// The counters (relaxed loads: each one exact, together possibly mid-burst).
    pub fn counters(&self) -> Counters {
        let mut c = Counters::default();
        // SAFETY: a valid tap; counters is any-thread.
        unsafe { ffi::mr_tap__counters(self.ptr(), &mut c) };
        c
    }

    /// The ring's shm fd and eventfd, still owned by the tap.
    pub fn ring_fds(&self) -> io::Result<(RawFd, RawFd)> {
        let (mut fd, mut efd) = (-1, -1);
        // SAFETY: a valid tap and two out-pointers.
        let rc = unsafe { ffi::mr_tap__ring_fds(self.ptr(), &mut fd, &mut efd) };
        if rc < 0 {
            return Err(io::Error::from_raw_os_error(-rc));
        }
        Ok((fd, efd))
    }

    /// The ring file's path; None for a memfd ring (or no ring).
    pub fn ring_path(&self) -> Option<PathBuf> {
        // SAFETY: a valid tap; the string (if any) lives as long as the tap.
        let p = unsafe { ffi::mr_tap__ring_path(self.ptr()) };
        if p.is_null() {
            return None;
        }
        let s = unsafe { CStr::from_ptr(p) };
        Some(PathBuf::from(std::ffi::OsStr::from_bytes(s.to_bytes())))
    }

    /// Why the ring was lost (its file truncated: mirroring stopped, forwarding goes on),
    /// or None while it is fine or when there is no ring.
    pub fn ring_lost(&self) -> Option<String> {
        let mut buf = [0 as c_char; ERRLEN];
        // SAFETY: a valid tap, a buffer of ERRLEN bytes.
        let rc = unsafe { ffi::mr_tap__ring_lost(self.ptr(), buf.as_mut_ptr(), buf.len()) };
        (rc == 1).then(|| unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
    }
}

/// One binding's tap, owned by its packet thread.  `Send`, not `Sync`.
pub struct Tap {
    handle: TapHandle,
    // per-burst arrays for mr_tap__offer, kept so a burst allocates nothing (they grow
    // once to the largest burst seen)
    data: Vec<*const c_void>,
    len: Vec<u32>,
    frags: Vec<ffi::mr_tap_frag>,
    frames: Vec<ffi::mr_tap_frame>,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

// SAFETY: the raw pointers in `data`/`len` are scratch, rewritten before each use; the tap
// itself may be used by whichever single thread owns the Tap.
unsafe impl Send for Tap {}

impl std::ops::Deref for Tap {
    type Target = TapHandle;
    fn deref(&self) -> &TapHandle {
        &self.handle
    }
}

impl Tap {
    /// A tap on a new ring: `ring_path` None makes an anonymous sealed memfd (register it
    /// with [`Client::register`]), Some a ring file (the daemon may also find it by its
    /// scan if it is in its runtime directory).  `data_size`: a power of two, 0 for the
    /// default 4 MiB.  `name`: the ring's label.
    pub fn new(ring_path: Option<&Path>, data_size: u32, name: &str) -> io::Result<Tap> {
        let path = ring_path.map(|p| cstring("ring path", p.as_os_str().as_bytes())).transpose()?;
        let name = cstring("name", name.as_bytes())?;
        let mut err = [0 as c_char; ERRLEN];
        let mut out = ptr::null_mut();
        // SAFETY: valid C strings (or NULL), an out-pointer and an error buffer.
        let rc = unsafe {
            ffi::mr_tap__create(&mut out, path.as_ref().map_or(ptr::null(), |p| p.as_ptr()), data_size,
                                name.as_ptr(), err.as_mut_ptr(), err.len())
        };
        if rc < 0 {
            return Err(error(rc, &err));
        }
        Ok(Tap::wrap(out))
    }

    /// A binding whose ring could not be made: it samples and counts every copy in
    /// `dropped_no_ring`, so the accounting stays whole.
    pub fn new_no_ring() -> io::Result<Tap> {
        let mut out = ptr::null_mut();
        // SAFETY: an out-pointer.
        let rc = unsafe { ffi::mr_tap__create_no_ring(&mut out) };
        if rc < 0 {
            return Err(io::Error::from_raw_os_error(-rc));
        }
        Ok(Tap::wrap(out))
    }

    fn wrap(p: *mut ffi::mr_tap) -> Tap {
        Tap {
            handle: TapHandle { raw: Arc::new(Raw(NonNull::new(p).expect("mr_tap__create returned 0 and NULL"))) },
            data: Vec::new(),
            len: Vec::new(),
            frags: Vec::new(),
            frames: Vec::new(),
            _not_sync: PhantomData,
        }
    }

    /// The any-thread side, for a control thread.
    pub fn handle(&self) -> TapHandle {
        self.handle.clone()
    }

    /// One RX burst, after the forwarding decision: applies the rule and pushes the
    /// sampled copies with one ring submit.  Returns the copies pushed.  Never blocks;
    /// reads the frames only.  `ts_ns`: a timestamp the consumer understands (mirrord
    /// forward uses CLOCK_REALTIME).
    pub fn offer_burst(&mut self, frames: &[&[u8]], ifindex: u32, ts_ns: u64) -> u32 {
        let n = frames.len().min(c_uint::MAX as usize);
        self.data.clear();
        self.len.clear();
        self.data.extend(frames[..n].iter().map(|f| f.as_ptr() as *const c_void));
        // a frame can't be 4 GiB, but never let a length wrap into a shorter read
        self.len.extend(frames[..n].iter().map(|f| u32::try_from(f.len()).unwrap_or(u32::MAX)));
        // SAFETY: n pointers and lengths describing live slices; `&mut self` makes this
        // the only thread offering on the tap.
        unsafe {
            ffi::mr_tap__offer(self.handle.ptr(), self.data.as_ptr(), self.len.as_ptr(), n as c_uint, ifindex, ts_ns)
        }
    }

    /// The same for multi-buffer frames: each frame a chain of fragments, gathered into
    /// one copy.  Allocates nothing once its scratch arrays reached the largest burst.
    pub fn offer_chains(&mut self, frames: &[&[&[u8]]], ifindex: u32, ts_ns: u64) -> u32 {
        let n = frames.len().min(c_uint::MAX as usize);
        self.frags.clear();
        self.frames.clear();
        for chain in &frames[..n] {
            self.frags.extend(chain.iter().map(|f| ffi::mr_tap_frag {
                data: f.as_ptr() as *const c_void,
                len: u32::try_from(f.len()).unwrap_or(u32::MAX),
            }));
        }
        // the frags array is complete (no more reallocation): point the frames into it
        let mut at = 0usize;
        for chain in &frames[..n] {
            let k = chain.len().min(u32::MAX as usize);
            // SAFETY: at + chain.len() <= frags.len(), both computed from the same chains
            self.frames.push(ffi::mr_tap_frame { frags: unsafe { self.frags.as_ptr().add(at) }, nfrags: k as u32 });
            at += chain.len();
        }
        // SAFETY: frame descriptors over live fragments; the only offering thread.
        unsafe { ffi::mr_tap__offer_burst(self.handle.ptr(), self.frames.as_ptr(), n as c_uint, ifindex, ts_ns) }
    }
}

/// A connection to the daemon's control socket (docs/control-protocol.md).  Blocking, each
/// call bounded by the C side's timeout (5 s): for a control thread, never the packet thread.
pub struct Client {
    raw: NonNull<ffi::mr_client>,
}

// SAFETY: a connection is one socket; `&mut self` keeps it to one thread at a time.
unsafe impl Send for Client {}

impl Drop for Client {
    fn drop(&mut self) {
        // SAFETY: ours, closed once.
        unsafe { ffi::mr_client__close(self.raw.as_ptr()) }
    }
}

impl Client {
    pub fn connect(path: impl AsRef<Path>) -> io::Result<Client> {
        let path = cstring("control socket", path.as_ref().as_os_str().as_bytes())?;
        let mut err = [0 as c_char; ERRLEN];
        let mut out = ptr::null_mut();
        // SAFETY: a C string, an out-pointer, an error buffer.
        let rc = unsafe { ffi::mr_client__connect(&mut out, path.as_ptr(), err.as_mut_ptr(), err.len()) };
        if rc < 0 {
            return Err(error(rc, &err));
        }
        Ok(Client { raw: NonNull::new(out).expect("mr_client__connect returned 0 and NULL") })
    }

    /// Hand the tap's ring (its fd and eventfd, as SCM_RIGHTS) to the daemon: by its path
    /// for a ring file, else under `name` (1-64 printable characters without '/').  The
    /// ring stays attached as long as this process lives.  Takes a `&Tap` or a `&TapHandle`.
    pub fn register(&mut self, tap: &TapHandle, name: &str) -> io::Result<String> {
        let name = cstring("name", name.as_bytes())?;
        let mut err = [0 as c_char; ERRLEN];
        // SAFETY: a valid client and tap (register only reads its descriptors and path,
        // which is any-thread).
        let rc = unsafe {
            ffi::mr_client__register(self.raw.as_ptr(), tap.ptr(), name.as_ptr(), err.as_mut_ptr(), err.len())
        };
        if rc < 0 {
            return Err(error(rc, &err));
        }
        Ok(name.into_string().unwrap_or_default())
    }

    /// The daemon's accepted rule for `ingress` and its configuration generation.
    pub fn rule(&mut self, ingress: &str) -> io::Result<(Rule, u64)> {
        let (rule, generation, _) = self.rule_instance(ingress)?;
        Ok((rule, generation))
    }

    /// The same with the daemon's instance token: follow (instance, generation), since a
    /// restarted daemon starts its generation at 1 again.
    pub fn rule_instance(&mut self, ingress: &str) -> io::Result<(Rule, u64, String)> {
        let ingress = cstring("ingress", ingress.as_bytes())?;
        let mut err = [0 as c_char; ERRLEN];
        let mut inst = [0 as c_char; 128];
        let mut rule = Rule::default();
        let mut generation = 0u64;
        // SAFETY: valid pointers and buffer lengths.
        let rc = unsafe {
            ffi::mr_client__rule(self.raw.as_ptr(), ingress.as_ptr(), &mut rule, &mut generation, inst.as_mut_ptr(),
                                 inst.len(), err.as_mut_ptr(), err.len())
        };
        if rc < 0 {
            return Err(error(rc, &err));
        }
        let instance = unsafe { CStr::from_ptr(inst.as_ptr()) }.to_string_lossy().into_owned();
        Ok((rule, generation, instance))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u32) -> Vec<u8> {
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x88, 0xb5]);
        f.extend_from_slice(&seq.to_be_bytes());
        let len = 60 + (seq % 200) as usize;
        f.extend((18..len).map(|i| (seq as usize * 31 + i) as u8));
        f
    }

    fn assert_send<T: Send>() {}
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn thread_rules_are_in_the_types() {
        assert_send::<Tap>();
        assert_send_sync::<TapHandle>();
        assert_send::<Client>();
    }

    #[test]
    fn rate_7_over_1000_frames_samples_143_and_pushes_them_all() {
        let mut tap = Tap::new(None, 0, "rs-unit").expect("a memfd tap");
        assert_eq!(tap.ring_path(), None);
        let (fd, efd) = tap.ring_fds().unwrap();
        assert!(fd >= 0 && efd >= 0 && fd != efd);
        tap.set_rule(Rule { session_id: 42, rate: 7, run_length: 0, max_len: 0 });
        let frames: Vec<Vec<u8>> = (0..1000).map(frame).collect();
        let mut pushed = 0;
        for burst in frames.chunks(32) {
            let refs: Vec<&[u8]> = burst.iter().map(|f| &f[..]).collect();
            pushed += tap.offer_burst(&refs, 1, 0);
        }
        let c = tap.counters();
        assert_eq!((c.seen, c.sampled, c.pushed, c.dropped_ring_full), (1000, 143, 143, 0));
        assert_eq!(pushed, 143);
        assert_eq!(c.sampled, c.pushed + c.dropped_ring_full + c.dropped_no_ring + c.dropped_ring_lost);
        assert_eq!(c.rule_generation, 1);
        assert_eq!(tap.ring_lost(), None);
    }

    #[test]
    fn a_full_ring_drops_and_counts_every_copy() {
        let mut tap = Tap::new(None, 64 * 1024, "rs-full").unwrap(); // nobody drains it
        tap.set_rule(Rule { session_id: 1, rate: 1, run_length: 0, max_len: 0 });
        let f = frame(199); // 259 bytes: 304 per record
        let refs = vec![&f[..]; 100];
        let mut pushed = 0;
        for _ in 0..10 {
            pushed += tap.offer_burst(&refs, 1, 0) as u64;
        }
        let c = tap.counters();
        assert_eq!(c.sampled, 1000);
        assert_eq!(c.pushed, pushed);
        assert!(c.dropped_ring_full > 0 && c.pushed > 0, "{c:?}");
        assert_eq!(c.sampled, c.pushed + c.dropped_ring_full);
    }

    #[test]
    fn session_0_mirrors_nothing_and_no_ring_counts_its_drops() {
        let mut tap = Tap::new(None, 0, "rs-zero").unwrap();
        let f = frame(1);
        assert_eq!(tap.offer_burst(&[&f[..], &f[..]], 1, 0), 0);
        let c = tap.counters();
        assert_eq!((c.seen, c.sampled, c.pushed), (2, 0, 0));

        let mut none = Tap::new_no_ring().unwrap();
        assert!(none.ring_fds().is_err());
        none.set_rule(Rule { session_id: 9, rate: 2, run_length: 0, max_len: 0 });
        assert_eq!(none.offer_burst(&[&f[..]; 10], 1, 0), 0);
        let c = none.counters();
        assert_eq!((c.seen, c.sampled, c.pushed, c.dropped_no_ring), (10, 5, 0, 5));
    }

    #[test]
    fn run_length_and_chains() {
        let mut tap = Tap::new(None, 0, "rs-chain").unwrap();
        // 1 in 10, and 2 more after each hit: 3 of every 10
        tap.set_rule(Rule { session_id: 5, rate: 10, run_length: 2, max_len: 64 });
        let f = frame(3);
        let (a, b) = f.split_at(20);
        let chain = [a, b];
        let chains: Vec<&[&[u8]]> = vec![&chain[..]; 100];
        assert_eq!(tap.offer_chains(&chains, 1, 0), 30);
        assert_eq!(tap.counters().sampled, 30);
    }

    #[test]
    fn a_control_thread_sets_the_rule_while_the_packet_thread_offers() {
        let mut tap = Tap::new(None, 0, "rs-threads").unwrap();
        let h = tap.handle();
        let ctl = std::thread::spawn(move || {
            for k in 0..200u32 {
                h.set_rule(Rule { session_id: 1 + k % 3, rate: 1 + k % 5, run_length: 0, max_len: 0 });
            }
            h.counters()
        });
        let pkt = std::thread::spawn(move || {
            let f = frame(7);
            let refs = vec![&f[..]; 16];
            for _ in 0..2000 {
                tap.offer_burst(&refs, 1, 0);
            }
            tap.counters()
        });
        ctl.join().unwrap();
        let c = pkt.join().unwrap();
        assert_eq!(c.seen, 32000);
        assert_eq!(c.sampled, c.pushed + c.dropped_ring_full);
    }

    #[test]
    fn errors_name_the_reason() {
        let e = Tap::new(None, 1000, "rs-bad").err().expect("a data size that is not a power of two");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert!(!e.to_string().is_empty());
        let e = Client::connect("/nonexistent/mirrord.sock").err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("/nonexistent/mirrord.sock"), "{e}");
        let e = Tap::new(None, 0, "a\0b").err().unwrap();
        assert!(e.to_string().contains("NUL"), "{e}");
    }
}
