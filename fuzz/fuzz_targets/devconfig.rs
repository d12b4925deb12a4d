//! `overlay dev` configuration (`devconfig`) on lossy UTF-8: the same text as an `overlay.toml`
//! (`DevConfig::parse_toml`), as a Procfile (`DevConfig::parse_procfile`) and as a `.env` file
//! (`devconfig::dotenv::parse`); the `watch` globs of what parses are matched against the
//! input's first lines.
//!
//! Properties: never panics; errors name the file and a line within the text; a configuration
//! that parses has at least one service, valid and unique keys, valid names and tags, unique
//! (name, tag), ports above 0, valid and unreserved env names, values without NUL, durations up
//! to an hour, and every dependency starts before its dependents; `find(key)` finds each
//! service. Roundtrips: an `overlay.toml` rendered back from the parsed services (in start
//! order) parses to the same services; the same for a Procfile (`key: command` lines) and for a
//! `.env` file (`KEY="escaped value"` lines); a glob compiled from its own text is the same glob.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use overlay_core::devconfig::{
    dns_name, dotenv, env::is_reserved, health, sockets, valid_env_name, valid_key, valid_label,
    ConfigError, DevConfig, Glob, Health, ServiceSpec,
};
use toml::Value;

const TOML_FILE: &str = "overlay.toml";
const PROCFILE: &str = "Procfile";
const DOTENV: &str = ".env";

fn check_error(e: &ConfigError, file: &str, text: &str) {
    assert_eq!(e.file, file);
    let lines = text.matches('\n').count() + 1;
    assert!(
        e.line >= 1 && e.line <= lines,
        "{file}: error on line {} of {lines}: {e}",
        e.line
    );
    assert!(!e.reason.is_empty());
}

/// What a configuration says, without the line numbers (a rendering moves lines).
fn without_lines(services: &[ServiceSpec]) -> Vec<ServiceSpec> {
    services
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.line = 0;
            for d in &mut s.depends_on {
                d.line = 0;
            }
            s
        })
        .collect()
}

fn check_config(c: &DevConfig, file: &str) {
    assert_eq!(c.file, file);
    assert!(!c.services.is_empty());
    for (i, s) in c.services.iter().enumerate() {
        assert!(valid_key(&s.key), "key {:?}", s.key);
        assert!(valid_label(&s.name), "name {:?}", s.name);
        assert!(s.tag.as_deref().is_none_or(valid_label), "tag {:?}", s.tag);
        assert!(s.port > 0);
        assert!(!s.command.trim().is_empty());
        assert!(s.build.as_deref().is_none_or(|b| !b.trim().is_empty()));
        for (n, v) in &s.env {
            assert!(valid_env_name(n) && !is_reserved(n), "env name {n:?}");
            assert!(!v.contains('\0'));
        }
        assert!(s.health_timeout <= Duration::from_secs(3600));
        assert!(s.stop_timeout <= Duration::from_secs(3600));
        assert!(s.drain <= Duration::from_secs(3600));
        if let Health::Http(p) = &s.health {
            assert!(p.starts_with('/'));
        }
        assert!(s.health_explicit || s.health == Health::Tcp);
        for earlier in &c.services[..i] {
            assert_ne!(earlier.key, s.key, "key twice");
            assert!(
                earlier.name != s.name || earlier.tag != s.tag,
                "(name, tag) twice"
            );
        }
        for d in &s.depends_on {
            assert_ne!(d.key, s.key);
            let j = c.services.iter().position(|x| x.key == d.key);
            assert!(
                j.is_some_and(|j| j < i),
                "{} starts before its dependency {}",
                s.key,
                d.key
            );
        }
        assert_eq!(c.find(&s.key).map(|x| &x.key), Some(&s.key));
        for g in &s.watch {
            assert_eq!(
                Glob::new(g.as_str()).as_ref(),
                Ok(g),
                "glob {g} changes when compiled again"
            );
        }
        let _ = s.hostname("ovl.internal");
    }
}

fn string(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// The services as an `overlay.toml`, in their start order.
fn render_toml(c: &DevConfig) -> String {
    let mut out = String::new();
    for s in &c.services {
        out.push_str(&format!("[services.{}]\n", s.key));
        out.push_str(&format!("command = {}\n", string(&s.command)));
        if let Some(b) = &s.build {
            out.push_str(&format!("build = {}\n", string(b)));
        }
        out.push_str(&format!("port = {}\n", s.port));
        out.push_str(&format!("name = {}\n", string(&s.name)));
        if let Some(t) = &s.tag {
            out.push_str(&format!("tag = {}\n", string(t)));
        }
        if !s.env.is_empty() {
            let pairs: Vec<String> = s
                .env
                .iter()
                .map(|(k, v)| format!("{k} = {}", string(v)))
                .collect();
            out.push_str(&format!("env = {{ {} }}\n", pairs.join(", ")));
        }
        if !s.depends_on.is_empty() {
            let deps: Vec<String> = s.depends_on.iter().map(|d| string(&d.key)).collect();
            out.push_str(&format!("depends_on = [{}]\n", deps.join(", ")));
        }
        if s.health_explicit {
            let kind = match &s.health {
                Health::Tcp => "tcp = true".to_string(),
                Health::None => "tcp = false".to_string(),
                Health::Http(p) => format!("http = {}", string(p)),
            };
            out.push_str(&format!(
                "health = {{ {kind}, timeout = {} }}\n",
                s.health_timeout.as_secs()
            ));
        }
        out.push_str(&format!("stop_timeout = {}\n", s.stop_timeout.as_secs()));
        out.push_str(&format!("drain = {}\n", s.drain.as_secs()));
        if !s.watch.is_empty() {
            let globs: Vec<String> = s.watch.iter().map(|g| string(g.as_str())).collect();
            out.push_str(&format!("watch = [{}]\n", globs.join(", ")));
        }
        out.push('\n');
    }
    out
}

fn check_toml(text: &str) {
    let c = match DevConfig::parse_toml(TOML_FILE, text) {
        Ok(c) => c,
        Err(e) => return check_error(&e, TOML_FILE, text),
    };
    check_config(&c, TOML_FILE);
    for s in &c.services {
        // The line of a service is the line of its table header.
        assert!(s.line >= 1 && s.line <= text.matches('\n').count() + 1);
    }
    let rendered = render_toml(&c);
    match DevConfig::parse_toml(TOML_FILE, &rendered) {
        Ok(again) => assert!(
            without_lines(&again.services) == without_lines(&c.services),
            "overlay.toml roundtrip changed the services:\n{rendered}\n{:#?}\n{:#?}",
            c.services,
            again.services
        ),
        Err(e) => panic!("the rendered overlay.toml does not parse: {e}\n{rendered}"),
    }
    let globs: Vec<&Glob> = c.services.iter().flat_map(|s| &s.watch).collect();
    for path in text.lines().take(4) {
        for g in &globs {
            let _ = g.matches(path);
            let _ = g.base();
        }
    }
}

fn check_procfile(text: &str) {
    let c = match DevConfig::parse_procfile(PROCFILE, text) {
        Ok(c) => c,
        Err(e) => return check_error(&e, PROCFILE, text),
    };
    check_config(&c, PROCFILE);
    for s in &c.services {
        assert!(s.depends_on.is_empty() && s.env.is_empty() && s.watch.is_empty());
        assert_eq!(Ok(s.name.clone()), dns_name(&s.key));
        assert!(!s.command.contains('\0') && !s.command.contains('\n'));
    }
    let rendered: String = c
        .services
        .iter()
        .map(|s| format!("{}: {}\n", s.key, s.command))
        .collect();
    match DevConfig::parse_procfile(PROCFILE, &rendered) {
        Ok(again) => assert!(
            without_lines(&again.services) == without_lines(&c.services),
            "Procfile roundtrip changed the services:\n{rendered}"
        ),
        Err(e) => panic!("the rendered Procfile does not parse: {e}\n{rendered}"),
    }
}

fn check_dotenv(text: &str) {
    let vars = match dotenv::parse(DOTENV, text) {
        Ok(v) => v,
        Err(e) => return check_error(&e, DOTENV, text),
    };
    let mut rendered = String::new();
    for (k, v) in &vars {
        assert!(valid_env_name(k), "{k:?}");
        assert!(!v.contains('\0'));
        let mut q = String::new();
        for c in v.chars() {
            match c {
                '\\' => q.push_str("\\\\"),
                '"' => q.push_str("\\\""),
                '\n' => q.push_str("\\n"),
                '\r' => q.push_str("\\r"),
                '\t' => q.push_str("\\t"),
                c => q.push(c),
            }
        }
        rendered.push_str(&format!("{k}=\"{q}\"\n"));
    }
    match dotenv::parse(DOTENV, &rendered) {
        Ok(again) => assert_eq!(again, vars, ".env roundtrip:\n{rendered}"),
        Err(e) => panic!("the rendered .env does not parse: {e}\n{rendered}"),
    }
}

fuzz_target!(|data: &[u8]| {
    // The health check's reading of a service's answer, and the kernel socket table parser.
    if let Some(code) = health::status(data) {
        assert!(data.starts_with(b"HTTP/1.") && code <= 999, "status {code}");
    }
    let _ = health::head_complete(data);
    let text = String::from_utf8_lossy(data);
    check_toml(&text);
    check_procfile(&text);
    check_dotenv(&text);
    for (port, inode) in sockets::listening_sockets(&text) {
        let _ = (port, inode);
    }
});
