//! Writes the seed corpus ([`tally_fuzz::seeds`]) under `fuzz/corpus/<target>/`, keeping what
//! is there already (inputs a campaign found worth keeping).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let mut written = 0;
    for (target, name, bytes) in tally_fuzz::seeds() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
        written += 1;
    }
    println!("{written} seeds written under {}", root.display());
    Ok(())
}
