//! Links libmirrord statically, so a binary built with this crate needs no LD_LIBRARY_PATH.
//!
//! - `MIRRORD_LIB_DIR` set: the directory holding `libmirrord.a` (an installed library:
//!   `make install-lib PREFIX=/usr/local` puts it in `/usr/local/lib`).
//! - Otherwise the library is built from this source tree with `make -C <repo> lib` and
//!   taken from `<repo>/build/lib`.  `MAKE` names another make.
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=MIRRORD_LIB_DIR");
    println!("cargo:rerun-if-env-changed=MAKE");
    let dir = match env::var_os("MIRRORD_LIB_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
            let root = manifest.join("../../..").canonicalize().expect("the mirrord source tree");
            for p in ["native/src", "native/include/mirrord", "native/libmirrord.map", "Makefile"] {
                println!("cargo:rerun-if-changed={}", root.join(p).display());
            }
            let make = env::var("MAKE").unwrap_or_else(|_| "make".into());
            let status = Command::new(&make).arg("-C").arg(&root).arg("lib").status();
            match status {
                Ok(s) if s.success() => {}
                Ok(s) => panic!("`{make} -C {} lib` failed ({s}); set MIRRORD_LIB_DIR to an installed libmirrord", root.display()),
                Err(e) => panic!("cannot run `{make}` to build libmirrord: {e}; set MIRRORD_LIB_DIR to an installed libmirrord"),
            }
            root.join("build/lib")
        }
    };
    if !dir.join("libmirrord.a").is_file() {
        panic!("{}: no libmirrord.a (MIRRORD_LIB_DIR must hold the static library)", dir.display());
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=static=mirrord");
    // the tap runs a session's capture filter with libpcap's bpf_filter()
    println!("cargo:rustc-link-lib=pcap");
}
