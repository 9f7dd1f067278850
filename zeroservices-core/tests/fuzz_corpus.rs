//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`, grown and minimized with
//! `fuzz/run-all.sh`) through the same entry points as the fuzz targets, so every input that
//! once reached new code keeps being checked by the normal test command (without sanitizers).

use std::path::PathBuf;

use zeroservices_core::fuzzing;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()));
    let mut n = 0;
    for entry in entries {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} panics", path.display());
        n += 1;
    }
    assert!(n > 100, "{target}: only {n} corpus inputs");
    n
}

#[test]
fn discovery_datagrams() {
    eprintln!("datagram: {} inputs", replay("datagram", fuzzing::datagram));
}

#[test]
fn router_frames_and_replies() {
    eprintln!("frames: {} inputs", replay("frames", fuzzing::frames));
}

#[test]
fn queries() {
    eprintln!("query: {} inputs", replay("query", fuzzing::query));
}

#[test]
fn updates() {
    eprintln!("update: {} inputs", replay("update", fuzzing::update));
}
