//! The mirrord embeddable mirror tap for Rust dataplanes: a safe wrapper over libmirrord's
//! `mirrord/tap.h` (the tap: sampling, run length, truncation, one ring submit per burst,
//! counters) and `mirrord/client.h` (registering the tap's ring with the daemon and
//! fetching the table for an ingress: [`Client::rules`], [`TapHandle::set_table`]).  docs/embedding.md, section "Rust".
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
//! let table = client.rules("eth1")?;                  // rules, filters, VLAN rules
//! tap.set_table(&table)?;
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

    /// `struct mr_tap_insn`: one classic BPF instruction (libpcap's `struct bpf_insn`).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct mr_tap_insn {
        pub code: u16,
        pub jt: u8,
        pub jf: u8,
        pub k: u32,
    }
    pub const MR_TAP_MAX_INSNS: usize = 4096;
    pub const MR_TAP_MAX_VLAN_RULES: usize = 64;
    pub const MR_TAP_MAX_TABLE_INSNS: usize = 16384;
    pub const MR_CLIENT_MAX_INSTANCE: usize = 64;
    /// `struct mr_tap_vlan_rule`: one rule of a table (`mr_tap__set_rules`).
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct mr_tap_vlan_rule {
        pub vid: u32,
        pub flags: u32,
        pub rule: mr_tap_rule,
        pub filter: *const mr_tap_insn,
        pub filter_len: u32,
    }
    /// `struct mr_tap_rule_counters`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct mr_tap_rule_counters {
        pub vid: u32,
        pub session_id: u32,
        pub seen: u64,
        pub filtered: u64,
        pub sampled: u64,
        pub pushed: u64,
        pub dropped_ring_full: u64,
        pub dropped_no_ring: u64,
        pub dropped_ring_lost: u64,
        pub skipped_no_listener: u64,
    }
    /// `mr_tap_vlan_rule.flags`: copy only while someone listens to the session's output.
    pub const MR_TAP_RULE_WHEN_LISTENED: u32 = 0x1;
    /// `struct mr_client_rules`: an ingress's whole table; `rules[k].filter` points into
    /// `insns` of the same struct (never move it while the pointers are used: it lives in
    /// a `Box` in [`crate::Rules`]).
    #[repr(C)]
    pub struct mr_client_rules {
        pub generation: u64,
        pub instance: [c_char; MR_CLIENT_MAX_INSTANCE],
        pub n: u32,
        pub ninsns: u32,
        pub rules: [mr_tap_vlan_rule; MR_TAP_MAX_VLAN_RULES + 1],
        pub insns: [mr_tap_insn; MR_TAP_MAX_TABLE_INSNS],
    }

    // the C layouts (x86_64 and every LP64 target: gcc's sizeof and offsetof)
    const _: () = assert!(std::mem::size_of::<mr_tap_vlan_rule>() == 40);
    const _: () = assert!(std::mem::size_of::<mr_tap_rule_counters>() == 72);
    const _: () = assert!(std::mem::offset_of!(mr_client_rules, rules) == 80);
    const _: () = assert!(std::mem::offset_of!(mr_client_rules, insns) == 2680);
    const _: () = assert!(std::mem::size_of::<mr_client_rules>() == 133752);

    extern "C" {
        pub fn mr_tap__set_rules(t: *mut mr_tap, rules: *const mr_tap_vlan_rule, n: u32) -> c_int;
        pub fn mr_tap__rule_counters(t: *const mr_tap, out: *mut mr_tap_rule_counters, max: u32) -> c_int;
        pub fn mr_tap__filtered(t: *const mr_tap) -> u64;
        pub fn mr_client__rules(c: *mut mr_client, ingress: *const c_char, out: *mut mr_client_rules,
                                err: *mut c_char, errlen: usize) -> c_int;
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

/// One instruction of a capture filter (libpcap's `struct bpf_insn`, host order).
pub type Insn = ffi::mr_tap_insn;
/// One rule's counters in the tap (`mr_tap__rule_counters`), named as in status.
pub type RuleCounters = ffi::mr_tap_rule_counters;

const ERRLEN: usize = 256;

/// The C side's errno beside its one-line message (see [`errno`]).
#[derive(Debug)]
struct CError {
    errno: i32,
    msg: String,
}
impl std::fmt::Display for CError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}
impl std::error::Error for CError {}

/// The errno of an error from this crate (EPROTO: the daemon's reply was refused, which
/// reconnecting will not cure; ECONNRESET, EPIPE, ENOENT: reconnect), if it has one.
pub fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| e.get_ref().and_then(|i| i.downcast_ref::<CError>()).map(|c| c.errno))
}

/// A C call's -errno and its one-line message as an io::Error of the same kind.
fn error(rc: c_int, err: &[c_char; ERRLEN]) -> io::Error {
    let kind = io::Error::from_raw_os_error(-rc).kind();
    // SAFETY: the C side NUL-terminates err within ERRLEN (vsnprintf); it starts zeroed.
    let msg = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
    if msg.is_empty() {
        io::Error::from_raw_os_error(-rc)
    } else {
        io::Error::new(kind, CError { errno: -rc, msg })
    }
}

/// One rule of a tap's table: frames with outer VLAN ID `vid` (0: the binding's other
/// frames, the default rule) go to `rule`'s session, through `filter` (empty: none)
/// before sampling.  `flags`: 0 or `ffi::MR_TAP_RULE_WHEN_LISTENED`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanRule<'a> {
    pub vid: u32,
    pub flags: u32,
    pub rule: Rule,
    pub filter: &'a [Insn],
}

/// An ingress's whole table from the daemon ([`Client::rules`]): the default rule first
/// (if any), then a rule per VLAN input by VID, each with its session's filter; the
/// configuration generation and the daemon's instance.  Pass it to [`TapHandle::set_table`].
/// It lives on the heap (about 130 KiB, a fixed capacity: the daemon's reply never makes
/// it grow); [`Client::rules_into`] refills one without allocating.
pub struct Rules {
    raw: Box<ffi::mr_client_rules>,
}

// SAFETY: the only pointers inside point into the same heap block, which moves with it.
unsafe impl Send for Rules {}
unsafe impl Sync for Rules {}

impl Default for Rules {
    fn default() -> Self {
        Rules::new()
    }
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("generation", &self.generation())
            .field("instance", &self.instance())
            .field("rules", &self.iter().collect::<Vec<_>>())
            .finish()
    }
}

impl Rules {
    /// An empty table (no rule: mirror nothing), generation 0.
    pub fn new() -> Rules {
        let layout = std::alloc::Layout::new::<ffi::mr_client_rules>();
        // SAFETY: all zeroes is a valid mr_client_rules (integers, NULL pointers); the
        // block is allocated with the layout Box frees it with.
        let raw = unsafe {
            let p = std::alloc::alloc_zeroed(layout) as *mut ffi::mr_client_rules;
            if p.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            Box::from_raw(p)
        };
        Rules { raw }
    }

    /// The daemon's configuration generation (starts again at 1 when it restarts).
    pub fn generation(&self) -> u64 {
        self.raw.generation
    }

    /// The daemon's instance token: follow (instance, generation).
    pub fn instance(&self) -> String {
        let b: Vec<u8> = self.raw.instance.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&b).into_owned()
    }

    pub fn len(&self) -> usize {
        (self.raw.n as usize).min(ffi::MR_TAP_MAX_VLAN_RULES + 1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rule `i` (0: the default rule when there is one, vid 0).
    pub fn get(&self, i: usize) -> Option<VlanRule<'_>> {
        if i >= self.len() {
            return None;
        }
        let r = &self.raw.rules[i];
        let base = self.raw.insns.as_ptr() as usize;
        let at = (r.filter as usize).wrapping_sub(base) / std::mem::size_of::<Insn>();
        let n = r.filter_len as usize;
        // the C side points each filter into insns; anything else is taken as no filter
        // rather than read
        let filter = if n > 0 && !r.filter.is_null() && (r.filter as usize) >= base
            && at.checked_add(n).is_some_and(|end| end <= self.raw.insns.len())
        {
            &self.raw.insns[at..at + n]
        } else {
            &[]
        };
        Some(VlanRule { vid: r.vid, flags: r.flags, rule: r.rule, filter })
    }

    pub fn iter(&self) -> impl Iterator<Item = VlanRule<'_>> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i))
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

    /// Swap in the table [`Client::rules`] gave, as it is (no copy on this side; the
    /// tap copies it).  Same swap and grace period as [`TapHandle::set_rule`].
    pub fn set_table(&self, rules: &Rules) -> io::Result<()> {
        let n = rules.len() as u32;
        // SAFETY: a valid tap; n rules whose filters point into the same live block.
        let rc = unsafe { ffi::mr_tap__set_rules(self.ptr(), rules.raw.rules.as_ptr(), n) };
        table_result(rc)
    }

    /// Swap in a table built by hand: at most one rule per vid (0..=4094), at most
    /// `MR_TAP_MAX_VLAN_RULES` VID rules beside the default one, filters libpcap's
    /// `bpf_validate()` accepts, `MR_TAP_MAX_INSNS` each and `MR_TAP_MAX_TABLE_INSNS` in
    /// all.  Anything else: `InvalidInput`, and the table in force stays.
    pub fn set_rules(&self, rules: &[VlanRule<'_>]) -> io::Result<()> {
        if rules.len() > ffi::MR_TAP_MAX_VLAN_RULES + 1 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput,
                                      format!("{} rules, at most {}", rules.len(), ffi::MR_TAP_MAX_VLAN_RULES + 1)));
        }
        let mut raw = Vec::with_capacity(rules.len());
        for r in rules {
            let len = u32::try_from(r.filter.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            raw.push(ffi::mr_tap_vlan_rule {
                vid: r.vid,
                flags: r.flags,
                rule: r.rule,
                filter: if len > 0 { r.filter.as_ptr() } else { ptr::null() },
                filter_len: len,
            });
        }
        // SAFETY: a valid tap, rules.len() rules over live slices (the tap copies them).
        let rc = unsafe { ffi::mr_tap__set_rules(self.ptr(), raw.as_ptr(), raw.len() as u32) };
        table_result(rc)
    }

    /// The counters of the rules in force with a session (each exact).
    pub fn rule_counters(&self) -> Vec<RuleCounters> {
        let mut out = vec![RuleCounters::default(); ffi::MR_TAP_MAX_VLAN_RULES + 1];
        // SAFETY: a valid tap and room for max entries.
        let n = unsafe { ffi::mr_tap__rule_counters(self.ptr(), out.as_mut_ptr(), out.len() as u32) };
        out.truncate(n.clamp(0, out.len() as c_int) as usize);
        out
    }

    /// Frames a session's filter rejected, all rules.
    pub fn filtered(&self) -> u64 {
        // SAFETY: a valid tap; any-thread.
        unsafe { ffi::mr_tap__filtered(self.ptr()) }
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

fn table_result(rc: c_int) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        rc if rc == -libc_einval() => Err(io::Error::new(io::ErrorKind::InvalidInput, CError {
            errno: -rc,
            msg: "mr_tap__set_rules: the table was refused (a vid over 4094 or twice, flags not 0, too many \
                  rules, a filter too long or one bpf_validate() refuses)"
                .into(),
        })),
        rc => Err(io::Error::from_raw_os_error(-rc)),
    }
}

const fn libc_einval() -> c_int {
    22 // EINVAL on Linux (std only: no libc crate)
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

    /// The whole table for `ingress` from the daemon's accepted configuration, as `mirrord
    /// forward` computes it: the default rule, a rule per VLAN input on `ingress`, each
    /// with its session's capture filter.  Give it to [`TapHandle::set_table`] when
    /// (instance, generation) changed.  A reply that does not hold up (a bad field, a
    /// program bpf_validate() refuses, more than the tap's bounds) is an error naming the
    /// field ([`errno`] EPROTO).
    pub fn rules(&mut self, ingress: &str) -> io::Result<Rules> {
        let mut r = Rules::new();
        self.rules_into(ingress, &mut r)?;
        Ok(r)
    }

    /// The same into an existing [`Rules`] (no allocation per poll).  On error `out` is
    /// left as it was.
    pub fn rules_into(&mut self, ingress: &str, out: &mut Rules) -> io::Result<()> {
        let ingress = cstring("ingress", ingress.as_bytes())?;
        let mut err = [0 as c_char; ERRLEN];
        // SAFETY: a valid client, a C string, the whole struct to fill, an error buffer.
        let rc = unsafe {
            ffi::mr_client__rules(self.raw.as_ptr(), ingress.as_ptr(), &mut *out.raw, err.as_mut_ptr(), err.len())
        };
        if rc < 0 {
            return Err(error(rc, &err));
        }
        Ok(())
    }

    /// DEFAULT RULE ONLY, NO FILTER, NO VLAN RULES (`mr_client__rule`): use
    /// [`Client::rules`].  The daemon's rule for `ingress` and its configuration generation.
    pub fn rule(&mut self, ingress: &str) -> io::Result<(Rule, u64)> {
        let (rule, generation, _) = self.rule_instance(ingress)?;
        Ok((rule, generation))
    }

    /// The same with the daemon's instance token (default rule only, as [`Client::rule`]).
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
        assert_send_sync::<Rules>();
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

    // ---- a hand-made table, and the daemon's table through a fake control socket

    /// ldh [12]; jeq #0x0800 jt 0 jf 1; ret #262144; ret #0: IPv4 (untagged) only
    const IPV4: [Insn; 4] = [
        Insn { code: 0x28, jt: 0, jf: 0, k: 12 },
        Insn { code: 0x15, jt: 0, jf: 1, k: 0x0800 },
        Insn { code: 0x06, jt: 0, jf: 0, k: 262144 },
        Insn { code: 0x06, jt: 0, jf: 0, k: 0 },
    ];

    fn eth(vid: Option<u16>, ethertype: u16, len: usize) -> Vec<u8> {
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        if let Some(v) = vid {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.resize(len, 0x5a);
        f
    }

    #[test]
    fn set_rules_dispatches_by_vid_and_filters_before_sampling() {
        let mut tap = Tap::new(None, 0, "rs-table").unwrap();
        let def = Rule { session_id: 1, rate: 1, run_length: 0, max_len: 0 };
        let v100 = Rule { session_id: 2, rate: 2, run_length: 0, max_len: 0 };
        tap.set_rules(&[VlanRule { vid: 0, flags: 0, rule: def, filter: &IPV4 },
                        VlanRule { vid: 100, flags: 0, rule: v100, filter: &[] }]).unwrap();
        let (a, b, c, d) = (eth(None, 0x0800, 60), eth(None, 0x86dd, 60), eth(Some(100), 0x0800, 64),
                            eth(Some(200), 0x0800, 64));
        // per burst: 1 IPv4 (kept), 1 IPv6 (filtered), 2 VID 100 (1 in 2), 1 VID 200 (the
        // default rule's filter sees a tagged frame: filtered)
        for _ in 0..10 {
            tap.offer_burst(&[&a, &b, &c, &c, &d], 1, 0);
        }
        let mut rc = tap.rule_counters();
        rc.sort_by_key(|r| r.vid);
        assert_eq!(rc.len(), 2);
        assert_eq!((rc[0].vid, rc[0].session_id, rc[0].seen, rc[0].filtered, rc[0].sampled), (0, 1, 30, 20, 10));
        assert_eq!((rc[1].vid, rc[1].session_id, rc[1].seen, rc[1].filtered, rc[1].sampled), (100, 2, 20, 0, 10));
        assert_eq!(tap.filtered(), 20);
        let c = tap.counters();
        assert_eq!((c.seen, c.sampled, c.pushed), (50, 20, 20));

        // refused tables leave the one in force
        let bad = [Insn { code: 0x05, jt: 0, jf: 0, k: 100 }, Insn { code: 0x06, jt: 0, jf: 0, k: 0 }];
        for t in [vec![VlanRule { vid: 4095, flags: 0, rule: def, filter: &[] }],
                  vec![VlanRule { vid: 7, flags: 0, rule: def, filter: &[] }; 2],
                  vec![VlanRule { vid: 0, flags: 0, rule: def, filter: &bad }]] {
            let e = tap.set_rules(&t).unwrap_err();
            assert_eq!((e.kind(), errno(&e)), (io::ErrorKind::InvalidInput, Some(22)), "{e}");
        }
        tap.offer_burst(&[&a], 1, 0);
        assert_eq!(tap.counters().sampled, 21);
    }

    /// The msgpack the daemon writes, for a fake one.
    #[derive(Default)]
    struct Mp(Vec<u8>);
    impl Mp {
        fn map(&mut self, n: u8) -> &mut Self { self.0.push(0x80 | n); self }
        fn arr(&mut self, n: u8) -> &mut Self { self.0.push(0x90 | n); self }
        fn s(&mut self, t: &str) -> &mut Self {
            assert!(t.len() < 32);
            self.0.push(0xa0 | t.len() as u8);
            self.0.extend_from_slice(t.as_bytes());
            self
        }
        fn u(&mut self, v: u32) -> &mut Self { self.0.push(0xce); self.0.extend_from_slice(&v.to_be_bytes()); self }
        fn bin(&mut self, insns: &[Insn]) -> &mut Self {
            self.0.push(0xc5);
            self.0.extend_from_slice(&((insns.len() * 8) as u16).to_be_bytes());
            for i in insns {
                self.0.extend_from_slice(&i.code.to_ne_bytes());
                self.0.extend_from_slice(&[i.jt, i.jf]);
                self.0.extend_from_slice(&i.k.to_ne_bytes());
            }
            self
        }
        fn session(&mut self, id: u32, rate: u32, input: &str, iface: &str, vid: u32, prog: &[Insn]) -> &mut Self {
            self.map(7).s("id").u(id).s("rate").u(rate).s("run_length").u(0).s("max_packet_length").u(0)
                .s("filter_program").bin(prog).s("input").arr(1).s(input)
                .s("inputs").arr(1).map(3).s("interface").s(iface).s("vlan").u(vid).s("name").s(input)
        }
    }

    /// Serve `replies` in turn, one per request, on one connection; returns the path.
    fn fake_daemon(dir: &str, replies: Vec<Vec<u8>>) -> PathBuf {
        use std::io::{Read, Write};
        let d = std::env::temp_dir().join(format!("mirrord-tap-{dir}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("control.sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            for body in replies {
                let mut head = [0u8; 4];
                if s.read_exact(&mut head).is_err() {
                    return;
                }
                let mut req = vec![0u8; u32::from_be_bytes(head) as usize];
                s.read_exact(&mut req).unwrap();
                s.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
                s.write_all(&body).unwrap();
            }
        });
        path
    }

    fn config(sessions: impl FnOnce(&mut Mp), n: u8, generation: u32) -> Vec<u8> {
        let mut m = Mp::default();
        m.map(2).s("ok").0.push(0xc3);
        m.s("config").map(3).s("instance").s("feedface").s("generation").u(generation).s("sessions").arr(n);
        sessions(&mut m);
        m.0
    }

    #[test]
    fn the_daemons_table_reaches_the_tap_and_a_bad_reply_is_refused() {
        let good = config(|m| {
            m.session(11, 1, "eth1", "eth1", 0, &IPV4);
            m.session(12, 2, "eth1.100", "eth1", 100, &[]);
        }, 2, 5);
        let bad_vid = config(|m| { m.session(11, 1, "eth1.4095", "eth1", 4095, &[]); }, 1, 6);
        let bad_prog = config(|m| {
            m.session(11, 1, "eth1", "eth1", 0, &[Insn { code: 0x05, jt: 0, jf: 0, k: 9 }]);
        }, 1, 7);
        let path = fake_daemon("rules", vec![good, bad_vid, bad_prog]);
        let mut client = Client::connect(&path).unwrap();
        let mut table = client.rules("eth1").unwrap();
        assert_eq!((table.generation(), table.instance().as_str(), table.len()), (5, "feedface", 2));
        let r: Vec<VlanRule> = table.iter().collect();
        assert_eq!((r[0].vid, r[0].rule.session_id, r[0].rule.rate, r[0].filter), (0, 11, 1, &IPV4[..]));
        assert_eq!((r[1].vid, r[1].rule.session_id, r[1].rule.rate, r[1].filter), (100, 12, 2, &[][..]));

        let mut tap = Tap::new(None, 0, "rs-daemon-table").unwrap();
        tap.set_table(&table).unwrap();
        let (a, b, c) = (eth(None, 0x0800, 60), eth(None, 0x86dd, 60), eth(Some(100), 0x86dd, 64));
        assert_eq!(tap.offer_burst(&[&a, &b, &c, &c, &c, &c], 1, 0), 1 + 2);

        let e = client.rules_into("eth1", &mut table).unwrap_err();
        assert_eq!(errno(&e), Some(71), "{e}"); // EPROTO
        assert!(e.to_string().contains("\"sessions[0].inputs[0].vlan\" 4095 is not a VLAN ID"), "{e}");
        assert_eq!(table.generation(), 5, "a refused reply leaves the table as it was");
        let e = client.rules_into("eth1", &mut table).unwrap_err();
        assert!(e.to_string().contains("bpf_validate"), "{e}");
        assert_eq!((table.generation(), table.len()), (5, 2));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
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
