//! The command tree as shell completions and man pages: made by the real binary, checked by
//! the shells and `man` that would read them (`cargo xtask test` installs man-db).

mod common;

use common::*;

#[test]
fn completions_parse_in_bash_and_man_tally_shows_every_command() {
    let dir = tempfile::tempdir().expect("tempdir");

    let bash = run_tally(&["completions", "bash"]);
    assert_eq!(bash.code, 0, "{bash}");
    let script = dir.path().join("tally.bash");
    std::fs::write(&script, &bash.stdout).expect("write");
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("bash runs");
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    for command in [
        "node",
        "check-config",
        "keys",
        "voucher",
        "audit",
        "completions",
    ] {
        assert!(
            bash.stdout.contains(command),
            "no {command} in the completions"
        );
    }
    let fish = run_tally(&["completions", "fish"]);
    assert!(fish.stdout.contains("complete -c tally"), "{fish}");

    let man1 = dir.path().join("man1");
    let out = run_tally(&["man", "--out", &man1.display().to_string()]);
    assert_eq!(out.code, 0, "{out}");
    assert!(man1.join("tally.1").exists() && man1.join("tally-node-init.1").exists());
    let man = std::process::Command::new("man")
        .args(["tally"])
        .env("MANPATH", dir.path())
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man runs (Debian's man-db; `cargo xtask test` installs it)");
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.status.success(),
        "{page}{}",
        String::from_utf8_lossy(&man.stderr)
    );
    for section in ["NAME", "SYNOPSIS", "SUBCOMMANDS"] {
        assert!(page.contains(section), "no {section} in man tally:\n{page}");
    }
    for command in ["tally-node(1)", "tally-voucher(1)", "tally-audit(1)"] {
        assert!(
            page.contains(command),
            "man tally names no {command}:\n{page}"
        );
    }
}
