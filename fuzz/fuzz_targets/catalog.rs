//! The relay's catalog of remote services (`catalog::parse`) on lossy UTF-8.
//!
//! Properties: never panics; an error's line is within the text (0 only when unknown) and its
//! reason is not empty, except for the TOML syntax errors the toml crate gives no message for
//! (a known finding, see docs/security.md); every entry of a catalog that parses has a valid
//! service name (a DNS label), a valid `host:port` target and a port above 0, names are unique;
//! and the catalog rendered back as TOML (`[services.NAME]`, `address`, `port`) parses to the
//! same entries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlay_core::names::registry::{valid_label, valid_target, RemoteEntry};
use overlay_core::relay::catalog::parse;

fn render(entries: &[RemoteEntry]) -> String {
    let mut s = String::new();
    for e in entries {
        // Targets are host:port of [A-Za-z0-9._-] or [IPv6]:port: nothing to escape.
        s.push_str(&format!(
            "[services.{}]\naddress = \"{}\"\nport = {}\n\n",
            e.name, e.target, e.port
        ));
    }
    s
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let entries = match parse(&text) {
        Ok(e) => e,
        Err(e) => {
            let lines = text.matches('\n').count() + 1;
            assert!(e.line <= lines, "error on line {} of {lines}: {e}", e.line);
            // Known (docs/security.md): for some TOML syntax errors (a control character in a
            // comment, ...) the toml crate's message is empty, and so is the reason. Every reason
            // the catalog's own checks give is not.
            if e.reason.is_empty() {
                assert!(
                    toml::from_str::<toml::Value>(&text).is_err(),
                    "an empty reason for a catalog that is valid TOML: {e:?}"
                );
            }
            // A reason quoting the input may carry its characters; the line number is ours.
            let first = e.to_string();
            assert!(first.starts_with(&format!("line {}: ", e.line)));
            return;
        }
    };
    for (i, e) in entries.iter().enumerate() {
        assert!(valid_label(&e.name), "invalid name {:?}", e.name);
        assert!(valid_target(&e.target), "invalid target {:?}", e.target);
        assert!(e.port > 0);
        assert!(
            entries[..i].iter().all(|x| x.name != e.name),
            "{} twice",
            e.name
        );
    }
    let rendered = render(&entries);
    match parse(&rendered) {
        Ok(again) => assert!(
            again == entries,
            "roundtrip changed the catalog:\n{rendered}"
        ),
        Err(e) => panic!("the rendered catalog does not parse: {e}\n{rendered}"),
    }
});
