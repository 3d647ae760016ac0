//! A Rust producer, using only this crate: a memfd tap, registered with the daemon, the
//! rule for an ingress from the daemon's config, COUNT distinct frames offered in bursts
//! of 32.  Prints the rule and the tap's counters, then keeps the ring alive (the daemon
//! detaches a ring passed by descriptor when its sender exits) until stdin closes.
//!
//!     cargo run --offline --example producer -- CONTROL_SOCKET COUNT [INGRESS]
//!
//! Frame k (tests/linux/test_tap_rust.py builds the same ones): broadcast, source
//! 02:00:00:00:00:01, ethertype 0x88b5, k as 4 big-endian bytes, then byte i is
//! (k * 31 + i) mod 256, up to 60 + k % 200 bytes.
use mirrord_tap::{Client, Tap};
use std::io::Read;

fn frame(k: u32) -> Vec<u8> {
    let mut f = vec![0xffu8; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x88, 0xb5]);
    f.extend_from_slice(&k.to_be_bytes());
    let len = 60 + (k % 200) as usize;
    f.extend((18..len).map(|i| (k as usize * 31 + i) as u8));
    f
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: producer CONTROL_SOCKET COUNT [INGRESS]");
        std::process::exit(2);
    }
    let count: u32 = args[2].parse().expect("COUNT: a number");
    let ingress = args.get(3).map_or("eth1", |s| s.as_str());

    let mut tap = Tap::new(None, 0, "rust-producer")?;
    let mut client = Client::connect(&args[1])?;
    client.register(&tap, "rust-producer")?;
    let (rule, generation, instance) = client.rule_instance(ingress)?;
    println!("rule session_id={} rate={} run_length={} max_len={} generation={generation} instance={instance}",
             rule.session_id, rule.rate, rule.run_length, rule.max_len);
    tap.set_rule(rule);

    let frames: Vec<Vec<u8>> = (0..count).map(frame).collect();
    let mut pushed = 0;
    for burst in frames.chunks(32) {
        let refs: Vec<&[u8]> = burst.iter().map(|f| &f[..]).collect();
        pushed += tap.offer_burst(&refs, 0, 0);
    }
    let c = tap.counters();
    println!("counters seen={} sampled={} pushed={} dropped_ring_full={} returned={pushed}",
             c.seen, c.sampled, c.pushed, c.dropped_ring_full);
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}
