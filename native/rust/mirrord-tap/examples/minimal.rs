//! The minimal producer of docs/embedding.md ("Rust"), kept here so that `cargo test`
//! compiles the documented text.
use mirrord_tap::{Client, Tap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn main() -> std::io::Result<()> {
    let mut tap = Tap::new(None, 0, "fwd-q0")?; // a 4 MiB memfd ring
    let ctl = tap.handle();                     // for the control thread
    std::thread::spawn(move || {
        let (mut gen, mut inst) = (0, String::new());
        let mut client = None;
        loop {
            if client.is_none() {
                // (re)connect and (re)register: a restarted daemon does not know the ring
                client = Client::connect("/run/mirrord/control.sock")
                    .and_then(|mut c| c.register(&ctl, "fwd-q0").map(|_| c))
                    .map_err(|e| eprintln!("mirrord: {e}"))
                    .ok();
            }
            if let Some(c) = client.as_mut() {
                match c.rule_instance("eth1") {
                    Ok((rule, g, i)) if g != gen || i != inst => {
                        ctl.set_rule(rule);
                        (gen, inst) = (g, i);
                    }
                    Ok(_) => {}
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
