//! The documentation that is derived from the code must match it: the command-line reference,
//! man pages, completions, and the `overlay.toml` keys.

use overlay_tests::world::bin;
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn output(b: &str, args: &[&str]) -> String {
    let out = Command::new(bin(b))
        .args(args)
        .output()
        .expect("binary runs");
    assert!(out.status.success(), "{b} {args:?} failed");
    String::from_utf8(out.stdout).expect("utf-8")
}

const REGENERATE: &str = "run scripts/gen-docs.sh and commit the result";

#[test]
fn configuration_reference_matches_the_binaries() {
    let doc =
        std::fs::read_to_string(root().join("docs/configuration.md")).expect("configuration.md");
    for b in ["overlay-relay", "overlay"] {
        let section = format!(
            "<!-- BEGIN GENERATED: {b} reference -->\n{}<!-- END GENERATED: {b} reference -->",
            output(b, &["reference"])
        );
        assert!(
            doc.contains(&section),
            "docs/configuration.md is out of date for {b}: {REGENERATE}"
        );
    }
}

#[test]
fn man_pages_and_completions_match_the_binaries() {
    for b in ["overlay", "overlay-relay"] {
        let man =
            std::fs::read_to_string(root().join(format!("docs/man/{b}.1"))).unwrap_or_default();
        assert_eq!(
            man,
            output(b, &["manpage"]),
            "docs/man/{b}.1 is out of date: {REGENERATE}"
        );
        let bash = std::fs::read_to_string(root().join(format!("docs/completions/{b}.bash")))
            .unwrap_or_default();
        assert_eq!(
            bash,
            output(b, &["completions", "bash"]),
            "completions are out of date: {REGENERATE}"
        );
    }
}

#[test]
fn every_overlay_toml_key_is_documented() {
    let doc =
        std::fs::read_to_string(root().join("docs/configuration.md")).expect("configuration.md");
    let src = std::fs::read_to_string(root().join("core/src/devconfig/toml_file.rs"))
        .expect("devconfig source");
    for strukt in ["struct RawService {", "struct RawHealth {"] {
        let body = src
            .split(strukt)
            .nth(1)
            .and_then(|s| s.split('}').next())
            .expect("struct in source");
        for field in body
            .lines()
            .filter_map(|l| l.trim().split_once(':').map(|(f, _)| f.trim()))
        {
            let field = field.trim_start_matches("pub ");
            if field.is_empty() || field.starts_with("//") || field.starts_with('#') {
                continue;
            }
            assert!(
                doc.contains(&format!("`{field}`")),
                "overlay.toml key '{field}' is not in docs/configuration.md"
            );
        }
    }
}
