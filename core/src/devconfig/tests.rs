use super::env::{service_addresses, service_env, Instance, KnownService, Where};
use super::logline::{self, LineSplitter};
use super::*;

fn toml(text: &str) -> Result<DevConfig, ConfigError> {
    DevConfig::parse("overlay.toml", text)
}

fn refused(text: &str) -> ConfigError {
    match toml(text) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e,
    }
}

fn keys(c: &DevConfig) -> Vec<&str> {
    c.services.iter().map(|s| s.key.as_str()).collect()
}

#[test]
fn parses_the_design_example() {
    let c = toml(
        r#"
[services.api]
command = "./target/debug/api"
build = "cargo build --bin api"   # run before start and before each restart
port = 8080                       # callers use api:8080
env = { RUST_LOG = "debug", WORKERS = 4, VERBOSE = true }
depends_on = ["db"]
health = { http = "/healthz" }    # or { tcp = true }
watch = ["src/**"]                # restart on change
tag = "v2"                        # optional variant
name = "api"

[services.db]
command = "postgres -D data"
port = 5432
health = { tcp = true, timeout = "1m" }
stop_timeout = 10
drain = "30s"
"#,
    )
    .expect("valid");
    assert_eq!(keys(&c), ["db", "api"], "dependencies start first");
    let api = &c.services[1];
    assert_eq!(api.name, "api");
    assert_eq!(api.tag.as_deref(), Some("v2"));
    assert_eq!(api.port, 8080);
    assert_eq!(api.build.as_deref(), Some("cargo build --bin api"));
    assert_eq!(
        api.env,
        vec![
            ("RUST_LOG".to_string(), "debug".to_string()),
            ("VERBOSE".to_string(), "true".to_string()),
            ("WORKERS".to_string(), "4".to_string()),
        ]
    );
    assert_eq!(api.health, Health::Http("/healthz".into()));
    assert!(api.health_explicit);
    assert_eq!(api.health_timeout, DEFAULT_HEALTH_TIMEOUT);
    assert_eq!(api.depends_on[0].key, "db");
    assert_eq!(api.depends_on[0].line, 7);
    assert_eq!(api.line, 2);
    assert!(api.watch[0].matches("src/main.rs"));
    assert_eq!(api.hostname("ovl.internal"), "v2.api.ovl.internal");
    let db = &c.services[0];
    assert_eq!(db.health_timeout, Duration::from_secs(60));
    assert_eq!(db.stop_timeout, Duration::from_secs(10));
    assert_eq!(db.drain, Duration::from_secs(30));
    assert_eq!(api.drain, DEFAULT_DRAIN);
    assert_eq!(db.hostname("ovl.internal"), "db.ovl.internal");
}

#[test]
fn defaults() {
    let c = toml("[services.web]\ncommand = \"python3 -m http.server $PORT\"\n").expect("valid");
    let s = &c.services[0];
    assert_eq!(s.port, DEFAULT_PORT);
    assert_eq!(s.health, Health::Tcp);
    assert!(!s.health_explicit);
    assert_eq!(s.stop_timeout, DEFAULT_STOP_TIMEOUT);
    assert!(s.build.is_none() && s.tag.is_none() && s.watch.is_empty());
    let c = toml("[services.w]\ncommand = \"w\"\nhealth = { tcp = false }\n").expect("valid");
    assert_eq!(c.services[0].health, Health::None);
}

#[test]
fn independent_services_keep_file_order() {
    let c = toml(
        "[services.c]\ncommand = \"c\"\ndepends_on = [\"b\"]\n\
         [services.a]\ncommand = \"a\"\n\
         [services.b]\ncommand = \"b\"\n\
         [services.d]\ncommand = \"d\"\ndepends_on = [\"a\", \"c\"]\n",
    )
    .expect("valid");
    assert_eq!(keys(&c), ["a", "b", "c", "d"]);
}

#[test]
fn refusals_name_the_line_and_reason() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "[services.api]\ncommand = \"x\"\ncomand = \"y\"\n",
            3,
            "unknown field `comand`",
        ),
        (
            "[service.api]\ncommand = \"x\"\n",
            1,
            "unknown field `service`",
        ),
        (
            "[services.api]\ncommand = \"x\"\nhealth = { http = \"/\", retries = 3 }\n",
            3,
            "unknown field `retries`",
        ),
        (
            "\n\n[services.api]\nport = 8080\n",
            3,
            "service api has no command",
        ),
        ("[services.api]\ncommand = \"  \"\n", 2, "empty command"),
        (
            "[services.a]\ncommand = \"a\"\ndepends_on = [\"b\"]\n\
             [services.b]\ncommand = \"b\"\ndepends_on = [\"c\"]\n\
             [services.c]\ncommand = \"c\"\ndepends_on = [\"a\"]\n",
            9,
            "dependency cycle: a -> b -> c -> a",
        ),
        (
            "[services.a]\ncommand = \"a\"\ndepends_on = [\"a\"]\n",
            3,
            "depends on itself",
        ),
        (
            "[services.a]\ncommand = \"a\"\ndepends_on = [\n  \"db\",\n  \"cache\"\n]\n\
             [services.db]\ncommand = \"d\"\n",
            5,
            "depends on cache, which is not defined",
        ),
        (
            "[services.api]\ncommand = \"a\"\n[services.api2]\ncommand = \"b\"\nname = \"api\"\n",
            3,
            "services api2 and api (line 1) both have name api and no tag",
        ),
        (
            "[services.a]\ncommand = \"a\"\nname = \"x\"\ntag = \"v2\"\n\
             [services.b]\ncommand = \"b\"\nname = \"x\"\ntag = \"v2\"\n",
            5,
            "both have name x and tag v2",
        ),
        (
            "[services._api]\ncommand = \"a\"\n",
            1,
            "'_api' would be '-api' on the overlay, which is no DNS name",
        ),
        (
            "[services.api]\ncommand = \"a\"\ntag = \"V_2\"\n",
            3,
            "'V_2' is not a valid tag",
        ),
        (
            "[services.api]\ncommand = \"a\"\nport = 0\n",
            3,
            "port must be between",
        ),
        (
            "[services.api]\ncommand = \"a\"\nport = 70000\n",
            3,
            "port must be between",
        ),
        (
            "[services.api]\ncommand = \"a\"\nenv = { PORT = \"1\" }\n",
            3,
            "PORT is set by overlay",
        ),
        (
            "[services.api]\ncommand = \"a\"\nenv = { OVERLAY_DNS = \"1\" }\n",
            3,
            "OVERLAY_DNS is set by overlay",
        ),
        (
            "[services.api]\ncommand = \"a\"\nhealth = { http = \"/\", tcp = true }\n",
            3,
            "both http and tcp",
        ),
        (
            "[services.api]\ncommand = \"a\"\nhealth = { http = \"healthz\" }\n",
            3,
            "must be a path",
        ),
        (
            "[services.api]\ncommand = \"a\"\nhealth = {}\n",
            3,
            "health needs http",
        ),
        (
            "[services.api]\ncommand = \"a\"\nwatch = [\"/etc/**\"]\n",
            3,
            "is absolute",
        ),
        (
            "[services.api]\ncommand = \"a\"\nstop_timeout = \"soon\"\n",
            3,
            "stop_timeout must be a duration",
        ),
        ("[services.api]\ncommand = 5\n", 2, "invalid type"),
        ("[services.api]\ncommand = \"a\n", 2, "TOML"),
        (
            "[services.api]\ncommand = \"a\"\n[services.api]\ncommand = \"b\"\n",
            3,
            "duplicate",
        ),
        ("# nothing here\n", 1, "there are no services"),
    ];
    for (text, line, reason) in cases {
        let e = refused(text);
        assert_eq!(e.file, "overlay.toml");
        assert_eq!(
            (e.line, e.reason.contains(reason)),
            (*line, true),
            "for {text:?}: got {e}"
        );
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!("overlay.toml:{line}: ")),
            "{shown}"
        );
        assert!(!shown.contains('\n'), "one line: {shown:?}");
    }
}

#[test]
fn procfiles() {
    let c = DevConfig::parse(
        "Procfile",
        "# services\nweb: python3 -m http.server $PORT\n\nworker:  ./worker --queue=a:b \n",
    )
    .expect("valid");
    assert_eq!(keys(&c), ["web", "worker"]);
    assert_eq!(c.services[1].command, "./worker --queue=a:b");
    assert!(c.services.iter().all(|s| s.port == DEFAULT_PORT));
    assert_eq!(c.services[1].line, 4);
    let bad: &[(&str, usize, &str)] = &[
        ("web python3\n", 1, "expected 'name: command'"),
        ("web:\n", 1, "has no command"),
        ("web: a\nweb: b\n", 2, "defined twice (first on line 1)"),
        ("web_: a\n", 1, "'web_' would be 'web-' on the overlay"),
        ("web_1: a\nweb-1: b\n", 2, "both have name web-1"),
        ("we b: a\n", 1, "not a valid process name"),
        ("\n", 1, "there are no services"),
    ];
    for (text, line, reason) in bad {
        let e = DevConfig::parse("Procfile", text).expect_err("refused");
        assert_eq!((e.line, e.reason.contains(reason)), (*line, true), "{e}");
    }
    // Upper-case process names are fine as keys; the DNS name is lower case.
    let c = DevConfig::parse("Procfile.dev", "Web: x\n").expect("valid");
    assert_eq!(
        (c.services[0].key.as_str(), c.services[0].name.as_str()),
        ("Web", "web")
    );
    assert_eq!(c.find("Web").map(|s| s.key.as_str()), Some("Web"));
    assert_eq!(c.find("web").map(|s| s.key.as_str()), Some("Web"));
    assert!(c.mapped_names().iter().any(|s| s.key == "Web"));
}

#[test]
fn procfile_and_toml_names_map_by_one_rule() {
    // Heroku-style process types work unchanged: lower case, '_' as '-'.
    let c = DevConfig::parse(
        "Procfile",
        "clock_worker: a
Web_API: b
web: c
",
    )
    .expect("valid");
    let names: Vec<(&str, &str)> = c
        .services
        .iter()
        .map(|s| (s.key.as_str(), s.name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("clock_worker", "clock-worker"),
            ("Web_API", "web-api"),
            ("web", "web")
        ]
    );
    let mapped: Vec<&str> = c.mapped_names().iter().map(|s| s.key.as_str()).collect();
    assert_eq!(mapped, ["clock_worker", "Web_API"]);
    assert_eq!(
        c.find("clock-worker").map(|s| s.key.as_str()),
        Some("clock_worker")
    );
    // The same rule for overlay.toml keys; an explicit name is not a mapping.
    let c = toml(
        "[services.clock_worker]\ncommand = \"a\"\n[services.Api]\ncommand = \"b\"\n\
         [services.db_main]\ncommand = \"c\"\nname = \"postgres\"\n",
    )
    .expect("valid");
    let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["clock-worker", "api", "postgres"]);
    assert_eq!(c.mapped_names().len(), 2);
    assert_eq!(dns_name("A_b-C"), Ok("a-b-c".into()));
    assert_eq!(dns_name("_x"), Err("-x".into()));
}

#[test]
fn find_by_key_or_label() {
    let c = toml(
        "[services.api]\ncommand = \"a\"\n[services.api-v2]\ncommand = \"b\"\nname = \"api\"\ntag = \"v2\"\n",
    )
    .expect("valid");
    assert_eq!(c.find("api-v2").map(|s| s.key.as_str()), Some("api-v2"));
    assert_eq!(c.find("v2.api").map(|s| s.key.as_str()), Some("api-v2"));
    assert_eq!(c.find("api").map(|s| s.key.as_str()), Some("api"));
    assert!(c.find("nope").is_none());
}

#[test]
fn dotenv_files() {
    let vars = dotenv::parse(
        ".env",
        "# comment\n\nA=1\nexport B = two words \nC='single # kept'\nD=\"x\\ny \\\"q\\\"\" # c\nE=v # comment\nF=\nG=a=b\n",
    )
    .expect("valid");
    let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("A"), Some("1"));
    assert_eq!(get("B"), Some("two words"));
    assert_eq!(get("C"), Some("single # kept"));
    assert_eq!(get("D"), Some("x\ny \"q\""));
    assert_eq!(get("E"), Some("v"));
    assert_eq!(get("F"), Some(""));
    assert_eq!(get("G"), Some("a=b"));
    for (text, line, reason) in [
        ("A=1\nnope\n", 2, "expected KEY=VALUE"),
        ("1A=x\n", 1, "not a valid environment variable name"),
        ("A='x\n", 1, "single quote is not closed"),
        ("A=\"x\n", 1, "double quote is not closed"),
        ("A='x' y\n", 1, "after the quoted value"),
    ] {
        let e = dotenv::parse(".env", text).expect_err("refused");
        assert_eq!((e.line, e.reason.contains(reason)), (line, true), "{e}");
    }
}

fn known(name: &str, tag: Option<&str>, port: u16, place: Where) -> KnownService {
    KnownService {
        name: name.into(),
        tag: tag.map(Into::into),
        port,
        place,
    }
}

#[test]
fn service_address_variables_follow_name_resolution() {
    let all = [
        known("orders", None, 9000, Where::Peer),
        known("orders", None, 8080, Where::Remote),
        known("orders", Some("v2"), 7000, Where::Local),
        known("user-db", None, 5432, Where::Local),
        known("canary", Some("v3"), 81, Where::Peer),
        // Found on demand: no port of its own, so no variable.
        known("cache", None, 0, Where::Remote),
    ];
    let vars = service_addresses(&all, "ovl.internal.");
    assert_eq!(vars.get("SERVICE_CACHE_ADDRESS"), None);
    assert_eq!(
        vars.get("SERVICE_ORDERS_ADDRESS").map(String::as_str),
        Some("orders.ovl.internal:8080")
    );
    assert_eq!(
        vars.get("SERVICE_USER_DB_ADDRESS").map(String::as_str),
        Some("user-db.ovl.internal:5432")
    );
    assert_eq!(
        vars.get("SERVICE_CANARY_ADDRESS").map(String::as_str),
        Some("canary.ovl.internal:81")
    );
    assert_eq!(vars.len(), 3);
}

#[test]
fn environment_of_a_service() {
    let mut spec = ServiceSpec::new("api-v2", "x");
    spec.name = "api".into();
    spec.tag = Some("v2".into());
    spec.env = vec![("MODE".into(), "service".into())];
    let dotenv = vec![
        ("MODE".to_string(), "dotenv".to_string()),
        ("PORT".to_string(), "3000".to_string()),
        (
            "SERVICE_DB_ADDRESS".to_string(),
            "localhost:5432".to_string(),
        ),
        ("FROM_DOTENV".to_string(), "yes".to_string()),
    ];
    let inst = Instance {
        local_port: 41000,
        address: Some("100.64.0.70:8080".into()),
        callback_url: Some("http://relay:30001".into()),
    };
    let known = [
        known("db", None, 5432, Where::Remote),
        known("web", None, 80, Where::Local),
    ];
    let env = service_env(&spec, &inst, "ovl.internal", &known, &dotenv);
    let get = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(get("PORT"), Some("41000"), ".env cannot move the port");
    assert_eq!(get("OVERLAY_SERVICE"), Some("api"));
    assert_eq!(get("OVERLAY_ADDRESS"), Some("100.64.0.70:8080"));
    assert_eq!(get("OVERLAY_HOSTNAME"), Some("v2.api.ovl.internal"));
    assert_eq!(get("OVERLAY_CALLBACK_URL"), Some("http://relay:30001"));
    assert_eq!(get("OVERLAY_DNS"), Some("100.100.100.100:53"));
    assert_eq!(get("OVERLAY_TAG"), Some("v2"));
    assert_eq!(get("SERVICE_WEB_ADDRESS"), Some("web.ovl.internal:80"));
    assert_eq!(
        get("SERVICE_DB_ADDRESS"),
        Some("localhost:5432"),
        ".env wins"
    );
    assert_eq!(get("MODE"), Some("service"), "the service's env wins");
    assert_eq!(get("FROM_DOTENV"), Some("yes"));
    // Without a registration (no daemon): the local address and an empty callback URL.
    let env = service_env(
        &spec,
        &Instance {
            local_port: 5,
            ..Default::default()
        },
        "d",
        &[],
        &[],
    );
    assert_eq!(
        env.get("OVERLAY_ADDRESS").map(String::as_str),
        Some("127.0.0.1:5")
    );
    assert_eq!(
        env.get("OVERLAY_CALLBACK_URL").map(String::as_str),
        Some("")
    );
}

#[test]
fn globs() {
    let g = |p: &str| Glob::new(p).expect("glob");
    assert!(g("src/**").matches("src/a/b/c.rs"));
    assert!(g("src/**").matches("src/main.rs"));
    assert!(!g("src/**").matches("tests/main.rs"));
    assert!(g("**/*.rs").matches("main.rs"));
    assert!(g("**/*.rs").matches("a/b/main.rs"));
    assert!(!g("**/*.rs").matches("a/b/main.rs.bak"));
    assert!(g("src/*.rs").matches("src/lib.rs"));
    assert!(!g("src/*.rs").matches("src/x/lib.rs"));
    assert!(g("a/**/b/*.t?t").matches("a/b/x.txt"));
    assert!(g("a/**/b/*.t?t").matches("a/1/2/b/x.tot"));
    assert!(g("[a-c]*.go").matches("b_test.go"));
    assert!(!g("[!a-c]*.go").matches("b_test.go"));
    assert!(g("*.[ch]").matches("x.h"));
    assert!(g("*a*b*c").matches("xxaxxbxxbc"));
    assert!(!g("*a*b*c").matches("xxaxxbxxbd"));
    // A plain path: the file, or everything under the directory.
    assert!(g("src").matches("src/deep/file.rs"));
    assert!(g("./Cargo.toml").matches("Cargo.toml"));
    assert!(!g("Cargo.toml").matches("Cargo.lock"));
    assert_eq!(g("src/**/*.rs").base(), "src");
    assert_eq!(g("../shared/*.proto").base(), "../shared");
    assert_eq!(g("**").base(), "");
    assert!(g(".").matches("anything/at/all"));
    assert!(Glob::new("").is_err());
    assert!(Glob::new("a/[bc").is_err());
    assert!(Glob::new("/abs").is_err());
}

#[test]
fn backoff_doubles_and_caps() {
    let s: Vec<u64> = (1..=8).map(|n| restart_backoff(n).as_secs()).collect();
    assert_eq!(s, [1, 2, 4, 8, 16, 30, 30, 30]);
    assert_eq!(restart_backoff(0).as_secs(), 1);
    assert_eq!(restart_backoff(u32::MAX), MAX_BACKOFF);
}

#[test]
fn line_splitter_bounds_memory() {
    let mut s = LineSplitter::new(8);
    let mut out = Vec::new();
    s.push(b"ab", &mut out);
    s.push(b"c\r\nde\nfghijklmnopq", &mut out);
    s.push(b"rstuv\nwx", &mut out);
    assert_eq!(
        out,
        vec![
            "abc".to_string(),
            "de".to_string(),
            format!("fghijklm{}", logline::TRUNCATED),
            // the rest of the long line is dropped
        ]
    );
    assert_eq!(s.finish().as_deref(), Some("wx"));
    assert_eq!(s.finish(), None);
    // Exactly max bytes is not cut; a flood without newlines never holds more than max.
    let mut s = LineSplitter::new(4);
    let mut out = Vec::new();
    s.push(b"abcd\n", &mut out);
    for _ in 0..1000 {
        s.push(&[b'x'; 1000], &mut out);
    }
    s.push(b"\nok\n", &mut out);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0], "abcd");
    assert_eq!(out[2], "ok");
    let mut s = LineSplitter::new(16);
    let mut out = Vec::new();
    s.push(b"bad \xff utf8\n", &mut out);
    assert_eq!(out[0], "bad \u{fffd} utf8");
}

#[test]
fn timestamps_round_trip() {
    assert_eq!(logline::format_utc(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        logline::format_utc(1_709_210_096_789),
        "2024-02-29T12:34:56.789Z"
    );
    for ms in [0u64, 951_782_400_000, 1_709_210_096_789, 4_102_444_799_999] {
        assert_eq!(logline::parse_utc(&logline::format_utc(ms)), Some(ms));
    }
    assert_eq!(logline::parse_utc("2024-13-01T00:00:00.000Z"), None);
    assert_eq!(logline::parse_utc("2024-01-01 00:00:00.000Z"), None);
    assert_eq!(logline::parse_utc("+024-01-01T00:00:00.000Z"), None);
    let l = logline::file_line(1_709_210_096_789, "hello world");
    assert_eq!(
        logline::split_file_line(&l),
        Some((1_709_210_096_789, "hello world"))
    );
    assert_eq!(logline::split_file_line("garbage"), None);
    assert_eq!(logline::split_file_line("é"), None);
    assert_eq!(logline::clock(1_709_210_096_789, 0), "12:34:56.789");
    assert_eq!(
        logline::clock(1_709_210_096_789, -13 * 3600),
        "23:34:56.789"
    );
}

#[test]
fn merge_keeps_time_order_and_input_order_on_ties() {
    let a = vec![(1, "a1"), (5, "a5"), (5, "a5b")];
    let b = vec![(2, "b2"), (5, "b5"), (9, "b9")];
    let m = logline::merge(&[a, b]);
    let lines: Vec<&str> = m.iter().map(|(_, _, l)| *l).collect();
    assert_eq!(lines, ["a1", "b2", "a5", "a5b", "b5", "b9"]);
    assert_eq!((m[1].0, m[1].1), (1, 2));
}

#[test]
fn nul_bytes_in_commands_are_refused_like_in_a_procfile() {
    let e = DevConfig::parse_toml(
        "overlay.toml",
        "[services.api]\ncommand = \"run\\u0000x\"\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("NUL"), "{e}");
    let e = DevConfig::parse_toml(
        "overlay.toml",
        "[services.api]\ncommand = \"run\"\nbuild = \"make\\u0000\"\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("NUL"), "{e}");
}
