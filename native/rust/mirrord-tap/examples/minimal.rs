//! The minimal producer of docs/embedding.md ("Rust"), kept here so that `cargo test`
//! compiles the documented text.
use mirrord_tap::{Client, Rules, Tap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn main() -> std::io::Result<()> {
    let mut tap = Tap::new(None, 0, "fwd-q0")?; // a 4 MiB memfd ring
    let ctl = tap.handle();                     // for the control thread
    std::thread::spawn(move || {
        let (mut gen, mut inst) = (0, String::new());
        let mut client = None;
        let mut table = Rules::new();           // ~130 KiB on the heap, refilled each poll
        loop {
            if client.is_none() {
                // (re)connect and (re)register: a restarted daemon does not know the ring
                client = Client::connect("/run/mirrord/control.sock")
                    .and_then(|mut c| c.register(&ctl, "fwd-q0").map(|_| c))
                    .map_err(|e| eprintln!("mirrord: {e}"))
                    .ok();
            }
            if let Some(c) = client.as_mut() {
                // eth1's whole table: its session's rule and filter, a rule per VLAN input
                match c.rules_into("eth1", &mut table) {
                    Ok(()) if table.generation() != gen || table.instance() != inst => {
                        match ctl.set_table(&table) {
                            Ok(()) => (gen, inst) = (table.generation(), table.instance()),
                            Err(e) => eprintln!("mirrord: {e}"), // the old table stays
                        }
                    }
                    Ok(()) => {}
                    Err(e) => {
                        eprintln!("mirrord: {e}");
                        client = None;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    });

    // the packet thread: after the forwarding decision, once per RX burst
    let frame = [0u8; 64];
    for _ in 0..1_000_000 {
        let burst: [&[u8]; 2] = [&frame, &frame]; // the RX burst's frames, read in place
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        tap.offer_burst(&burst, 2 /* ifindex */, ts);
        // ... the frames go on (TX, or back to the fill ring)
    }
    let c = tap.counters();
    assert_eq!(c.sampled, c.pushed + c.dropped_ring_full + c.dropped_no_ring + c.dropped_ring_lost);
    Ok(())
}
