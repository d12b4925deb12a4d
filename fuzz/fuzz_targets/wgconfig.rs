//! `wgconfig::WgConfig::parse` on any text (lossy UTF-8), as `overlay daemon --config FILE`
//! reads a file. Properties: never panics; a config that parses renders (with the private key)
//! to text that parses back to the same config; rendering is stable; rendering without the
//! private key never writes it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use overlay_core::identity::key;
use overlay_core::identity::wgconfig::WgConfig;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(c) = WgConfig::parse(&text) else {
        return;
    };
    let rendered = c.render(true);
    let again = match WgConfig::parse(&rendered) {
        Ok(again) => again,
        Err(e) => panic!(
            "rendered config ({} bytes) does not parse: {e}\n{}",
            rendered.len(),
            rendered.chars().take(300).collect::<String>()
        ),
    };
    assert_eq!(again, c, "render/parse roundtrip changed the config");
    assert_eq!(again.render(true), rendered, "rendering is not stable");

    // Without the private key: no PrivateKey line, and the key appears once less than with it
    // (it may legitimately appear elsewhere, e.g. as a DNS entry the input chose).
    let public = c.render(false);
    assert!(
        !public.lines().any(|l| l
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("privatekey")),
        "render(false) wrote a PrivateKey line"
    );
    let secret = key::encode(&c.interface.private_key);
    assert!(
        public.matches(secret.as_str()).count() + 1 == rendered.matches(secret.as_str()).count(),
        "render(false) wrote the private key"
    );
});
