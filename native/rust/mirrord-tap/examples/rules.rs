//! mr_client__rules through the crate, as native/tests/test_client_rules.c does it in C
//! (tests/unit/test_client_rules.py runs both and compares them with the reference
//! forwarder): the table for INGRESS from the daemon, printed; with RING and FRAMES, a tap
//! on the ring file RING given that table with `set_table`, the frames of FRAMES (each a
//! 4-byte little-endian length, then the bytes) offered in bursts of 16, its counters
//! printed, and the ring kept (the tap removes its file when dropped) until stdin closes.
//!
//!     cargo run --offline --example rules -- CONTROL_SOCKET INGRESS [RING FRAMES]
use mirrord_tap::{errno, Client, Rules, Tap};
use std::io::Read;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 && args.len() != 5 {
        eprintln!("usage: rules CONTROL_SOCKET INGRESS [RING FRAMES]");
        std::process::exit(2);
    }
    let mut client = match Client::connect(&args[1]) {
        Ok(c) => c,
        Err(e) => {
            println!("result rc=-{} untouched=1 err={e}", errno(&e).unwrap_or(0));
            std::process::exit(1);
        }
    };
    let mut table = Rules::new();
    if let Err(e) = client.rules_into(&args[2], &mut table) {
        let untouched = table.is_empty() && table.generation() == 0 && table.instance().is_empty();
        println!("result rc=-{} untouched={} err={e}", errno(&e).unwrap_or(0), untouched as u8);
        return Ok(());
    }
    println!("result rc=0 untouched=0 err=");
    let ninsns: usize = table.iter().map(|r| r.filter.len()).sum();
    println!("table generation={} instance={} n={} ninsns={ninsns}", table.generation(), table.instance(),
             table.len());
    for r in table.iter() {
        let hex: String = r.filter.iter()
            .flat_map(|i| {
                let mut b = i.code.to_ne_bytes().to_vec();
                b.extend([i.jt, i.jf]);
                b.extend(i.k.to_ne_bytes());
                b
            })
            .map(|b| format!("{b:02x}"))
            .collect();
        println!("rule vid={} flags={} session_id={} rate={} run_length={} max_len={} filter={hex}", r.vid, r.flags,
                 r.rule.session_id, r.rule.rate, r.rule.run_length, r.rule.max_len);
    }
    if args.len() == 3 {
        return Ok(());
    }
    let mut tap = Tap::new(Some(Path::new(&args[3])), 1 << 20, "rust-rules")?;
    tap.set_table(&table)?;
    let raw = std::fs::read(&args[4])?;
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 4 <= raw.len() {
        let n = u32::from_le_bytes(raw[at..at + 4].try_into().unwrap()) as usize;
        frames.push(&raw[at + 4..at + 4 + n]);
        at += 4 + n;
    }
    let mut returned = 0;
    for (k, burst) in frames.chunks(16).enumerate() {
        returned += tap.offer_burst(burst, 7, 1000 + 16 * k as u64);
    }
    let c = tap.counters();
    println!("counters seen={} sampled={} pushed={} dropped_ring_full={} filtered={} returned={returned}", c.seen,
             c.sampled, c.pushed, c.dropped_ring_full, tap.filtered());
    for r in tap.rule_counters() {
        println!("rule_counters vid={} session_id={} seen={} filtered={} sampled={} pushed={}", r.vid, r.session_id,
                 r.seen, r.filtered, r.sampled, r.pushed);
    }
    println!("done");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}
