//! The AFL++ harness: `tally-fuzz-afl TARGET` runs one target of [`tally_fuzz::TARGETS`] in
//! AFL++'s persistent mode. Built and run by `cargo xtask fuzz` (docs/fuzzing.md).

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = tally_fuzz::target(&name) else {
        let names: Vec<&str> = tally_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: tally-fuzz-afl TARGET, one of: {}", names.join(", "));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| {
        target(data);
    });
}
