//! `overlay dev` end to end: environment, names from another node, restarts that lose no
//! request, failing builds, logs, clean shutdown, Procfiles, `overlay run`, bad configs.
//!
//! Services are small Python programs written into the test's directory. Tests marked "local"
//! use `overlay dev --local` and need no relay; the others run in a namespace world with a relay
//! and two nodes, `a` running the services and `b` calling them.

use overlay_core::names::resolver::Where;
use overlay_tests::overlay::{join_node, overlay, start_relay, Node, Relay};
use overlay_tests::world::{bin, sh_output, wait_until, Host, World};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An HTTP server on 127.0.0.1:$PORT. `/` answers `BODY version pid`, `/env` the environment.
/// On SIGTERM it keeps serving for 100 ms (what is already queued) and exits: a well-behaved
/// service that drains.
const SERVER: &str = r#"
import http.server, os, signal, sys, threading
version = open('version').read().strip() if os.path.exists('version') else 'v0'
body = ('%s %s %d\n' % (os.environ.get('BODY', os.environ['OVERLAY_SERVICE']), version, os.getpid())).encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.0'
    def do_GET(self):
        if self.path == '/env':
            b = ''.join('%s=%s\n' % kv for kv in sorted(os.environ.items())).encode()
        else:
            b = body
        self.send_response(200)
        self.send_header('Content-Length', str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])), H)
srv.daemon_threads = False
signal.signal(signal.SIGTERM, lambda *a: threading.Timer(0.1, srv.shutdown).start())
print('serving', version, 'on', os.environ['PORT'], flush=True)
srv.serve_forever()
"#;

/// Requests `argv[1]` until the file `argv[2]` exists (or 180 s pass); writes `ok fail` and the
/// first errors to `argv[3]`.
const CLIENT: &str = r#"
import os, sys, time, urllib.request
url, stop, out = sys.argv[1:4]
ok = fail = 0
errors = []
end = time.time() + 180
while not os.path.exists(stop) and time.time() < end:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            r.read()
            ok += 1
            open(out + '.ok', 'w').write('%d\n' % ok)
    except Exception as e:
        fail += 1
        errors.append(repr(e))
open(out + '.tmp', 'w').write('%d %d\n%s\n' % (ok, fail, '\n'.join(errors[:20])))
os.rename(out + '.tmp', out)
"#;

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A directory for a host's app, with the server script in it.
fn app(host: &Host) -> PathBuf {
    let dir = host.dir.join("app");
    std::fs::create_dir_all(&dir).expect("app dir");
    std::fs::write(dir.join("srv.py"), SERVER).expect("server");
    // Services may run as another user in some tests.
    sh_output(&format!("chmod -R a+rwX {}", host.dir.display()));
    dir
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write");
    p
}

/// Starts `overlay dev ARGS` in `host`; its output goes to `<host dir>/<log>.log`.
fn start_dev(w: &World, host: &Host, log: &str, args: &[&str]) -> u32 {
    start_dev_env(w, host, log, args, &[])
}

fn start_dev_env(w: &World, host: &Host, log: &str, args: &[&str], env: &[(&str, &str)]) -> u32 {
    let d = host.dir.display().to_string();
    let (state, run) = (format!("{d}/state"), format!("{d}/run"));
    let mut all: Vec<(&str, &str)> = vec![
        ("OVERLAY_STATE_DIR", &state),
        ("OVERLAY_RUN_DIR", &run),
        ("NO_COLOR", "1"),
        ("RUST_LOG", "warn"),
    ];
    all.extend_from_slice(env);
    let b = bin("overlay");
    let mut cmd = vec![b.to_str().expect("utf-8 path"), "dev"];
    cmd.extend_from_slice(args);
    w.spawn(host, log, &all, &cmd)
}

/// Waits until the session's output says `key` is ready `times` times in all; returns the pid
/// of the newest instance.
fn wait_ready(w: &World, host: &Host, log: &str, key: &str, times: usize) -> u32 {
    let mut pid = 0;
    let ok = wait_until(Duration::from_secs(30), || {
        let pids = ready_pids(&w.log(host, log), key);
        pid = pids.last().copied().unwrap_or(0);
        pids.len() >= times
    });
    assert!(ok, "{key} did not get ready:\n{}", w.log(host, log));
    pid
}

/// The pids of every "ready" line of `key`, in order.
fn ready_pids(out: &str, key: &str) -> Vec<u32> {
    out.lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(" | ")?;
            if name.split_whitespace().nth(1) != Some(key) {
                return None;
            }
            let rest = rest.strip_prefix("[overlay] ready in ")?;
            rest.split("pid ").nth(1)?.split(',').next()?.parse().ok()
        })
        .collect()
}

/// Whether a process has exited (gone, or a zombie nobody reaped yet).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().starts_with('Z'))
            .unwrap_or(true),
    }
}

/// Stops a session as Ctrl-C does and waits for it to exit.
fn interrupt(w: &World, host: &Host, log: &str, pid: u32) {
    sh_output(&format!("kill -INT {pid}"));
    assert!(
        wait_until(Duration::from_secs(20), || exited(pid)),
        "overlay dev did not stop:\n{}",
        w.log(host, log)
    );
}

/// Processes whose command line mentions `marker`.
fn processes_with(marker: &str) -> String {
    let out = sh_output(&format!("pgrep -af {} || true", shell(marker)));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains("pgrep"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn shell(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A relay and two joined nodes: `a` runs services, `b` calls them.
fn overlay_world(tag: &str) -> (World, Relay, Node, Node) {
    let mut w = World::new(tag);
    let relay = start_relay(&w, &[]);
    let token = relay.token(&w, "--uses 2");
    let ha = w.add_host("a", 2);
    let hb = w.add_host("b", 3);
    let a = join_node(&w, &ha, &token, "--name alpha");
    let b = join_node(&w, &hb, &token, "--name beta");
    (w, relay, a, b)
}

/// GET `url` from `host` with curl; panics on failure.
fn curl(w: &World, host: &Host, url: &str) -> String {
    w.exec_ok(host, &format!("curl -sS --fail -m 10 {url}"))
}

/// Waits until `url` answers from `host` (names take a moment to reach other nodes).
fn curl_eventually(w: &World, host: &Host, url: &str) -> String {
    let mut body = String::new();
    let ok = wait_until(Duration::from_secs(15), || {
        let o = w.exec(host, &format!("curl -sS --fail -m 5 {url}"));
        body = String::from_utf8_lossy(&o.stdout).into_owned();
        o.status.success()
    });
    assert!(ok, "{url} did not answer from {}", host.ns);
    body
}

fn env_of(body: &str) -> std::collections::BTreeMap<String, String> {
    body.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn environment_same_ports_and_tagged_versions_by_name_from_another_node() {
    let (w, _relay, a, b) = overlay_world("devenv");
    let dir = app(&a.host);
    write(
        &dir,
        ".env",
        "# local settings\nFROM_DOTENV=dotenv\nMODE=dotenv\nPORT=1\n",
    );
    let cfg = write(
        &dir,
        "overlay.toml",
        r#"
[services.api]
command = "exec python3 srv.py"
port = 8080
env = { MODE = "service", BODY = "api" }

[services.api-v2]
name = "api"
tag = "v2"
command = "exec python3 srv.py"
port = 8080
env = { BODY = "api-v2" }

[services.web]
command = "exec python3 srv.py"
port = 8080
depends_on = ["api"]
health = { http = "/" }

[services.envfile]
command = "env > envfile.txt; exec sleep 600"
health = { tcp = false }
"#,
    );
    let pid = start_dev(&w, &a.host, "dev", &["-f", cfg.to_str().expect("utf-8")]);
    for key in ["api", "api-v2", "web", "envfile"] {
        wait_ready(&w, &a.host, "dev", key, 1);
    }
    // Three services on port 8080 and two versions of api, by name from node b.
    assert!(curl_eventually(&w, &b.host, "http://api:8080/").starts_with("api "));
    assert!(curl_eventually(&w, &b.host, "http://v2.api:8080/").starts_with("api-v2 "));
    assert!(curl_eventually(&w, &b.host, "http://web:8080/").starts_with("web "));
    let api = a.local_address(&w, "api", None);
    let v2 = a.local_address(&w, "api", Some("v2"));
    assert_ne!(api, v2);
    // The environment, as the service sees it.
    let env = env_of(&curl(&w, &b.host, "http://api:8080/env"));
    let get = |k: &str| env.get(k).map(String::as_str).unwrap_or("<unset>");
    assert_eq!(get("OVERLAY_SERVICE"), "api");
    assert_eq!(get("OVERLAY_ADDRESS"), api);
    assert_eq!(get("OVERLAY_HOSTNAME"), "api.ovl.internal");
    assert_eq!(get("OVERLAY_DNS"), "100.100.100.100:53");
    assert!(env.contains_key("OVERLAY_CALLBACK_URL"));
    assert_eq!(get("SERVICE_WEB_ADDRESS"), "web.ovl.internal:8080");
    assert_eq!(get("SERVICE_API_ADDRESS"), "api.ovl.internal:8080");
    assert_eq!(get("SERVICE_ENVFILE_ADDRESS"), "envfile.ovl.internal:80");
    assert_eq!(get("FROM_DOTENV"), "dotenv");
    assert_eq!(get("MODE"), "service", "the service's env wins over .env");
    let port: u16 = get("PORT").parse().expect("PORT is a number");
    assert!(
        port > 1024,
        "PORT is the local port overlay chose, not .env's"
    );
    let env = env_of(&curl(&w, &b.host, "http://v2.api:8080/env"));
    assert_eq!(
        env.get("OVERLAY_HOSTNAME").map(String::as_str),
        Some("v2.api.ovl.internal")
    );
    assert_eq!(env.get("OVERLAY_ADDRESS"), Some(&v2));
    // A service that writes its environment to a file.
    let ok = wait_until(Duration::from_secs(5), || dir.join("envfile.txt").exists());
    assert!(ok);
    let env = env_of(&std::fs::read_to_string(dir.join("envfile.txt")).expect("envfile"));
    assert_eq!(
        env.get("OVERLAY_SERVICE").map(String::as_str),
        Some("envfile")
    );
    assert_eq!(
        env.get("SERVICE_API_ADDRESS").map(String::as_str),
        Some("api.ovl.internal:8080")
    );
    interrupt(&w, &a.host, "dev", pid);
}

#[test]
fn ten_restarts_under_load_lose_no_request_and_touch_no_other_service() {
    let (w, _relay, a, b) = overlay_world("devrestart");
    let dir = app(&a.host);
    write(&dir, "version", "v1\n");
    let cfg = write(
        &dir,
        "overlay.toml",
        r#"
[services.api]
command = "exec python3 srv.py"
port = 8080

[services.other]
command = "exec python3 srv.py"
port = 8080
"#,
    );
    let pid = start_dev(&w, &a.host, "dev", &["-f", cfg.to_str().expect("utf-8")]);
    let mut api_pid = wait_ready(&w, &a.host, "dev", "api", 1);
    let other_pid = wait_ready(&w, &a.host, "dev", "other", 1);
    let addr = a.local_address(&w, "api", None);
    curl_eventually(&w, &b.host, &format!("http://{addr}/"));
    let client = write(&b.host.dir, "client.py", CLIENT);
    let (stop, result) = (b.host.dir.join("stop"), b.host.dir.join("result"));
    w.spawn(
        &b.host,
        "client",
        &[],
        &[
            "python3",
            client.to_str().expect("utf-8"),
            &format!("http://{addr}/"),
            stop.to_str().expect("utf-8"),
            result.to_str().expect("utf-8"),
        ],
    );
    // Requests answered so far (the client counts them in RESULT.ok).
    let served = || {
        std::fs::read_to_string(b.host.dir.join("result.ok"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(10), || served() > 0),
        "the client got no answer"
    );
    let started = Instant::now();
    for i in 1..=10 {
        let out = overlay(&w, &a.host, "restart api");
        assert!(out.status.success(), "restart {i}: {}", text(&out));
        let new = wait_ready(&w, &a.host, "dev", "api", i + 1);
        assert_ne!(new, api_pid, "restart {i} started a new process");
        assert!(exited(api_pid), "the old process {api_pid} is gone");
        api_pid = new;
        // Under load: the new process answers requests before the next restart.
        let before = served();
        assert!(
            wait_until(Duration::from_secs(10), || served() > before),
            "no request answered after restart {i}"
        );
    }
    eprintln!("10 restarts in {} ms", started.elapsed().as_millis());
    std::fs::write(&stop, "").expect("stop file");
    assert!(
        wait_until(Duration::from_secs(40), || result.exists()),
        "client did not finish"
    );
    let res = std::fs::read_to_string(&result).expect("result");
    let mut counts = res.split_whitespace();
    let ok: u32 = counts
        .next()
        .and_then(|n| n.parse().ok())
        .expect("ok count");
    let failed: u32 = counts
        .next()
        .and_then(|n| n.parse().ok())
        .expect("fail count");
    eprintln!("client: {ok} requests answered, {failed} failed");
    assert!(ok > 20, "the client made requests: {res}");
    assert_eq!(failed, 0, "no request fails during restarts: {res}");
    // The other service was not touched.
    assert_eq!(ready_pids(&w.log(&a.host, "dev"), "other"), vec![other_pid]);
    assert!(!exited(other_pid));
    interrupt(&w, &a.host, "dev", pid);
}

#[test]
fn a_failing_build_keeps_the_old_version_serving() {
    let (w, _relay, a, b) = overlay_world("devbuild");
    let dir = app(&a.host);
    write(&dir, "version", "v1\n");
    write(
        &dir,
        "build.sh",
        "if [ -f broken ]; then echo 'src/main.rs:3: error: expected one of `;`'; exit 2; fi\necho built\n",
    );
    let cfg = write(
        &dir,
        "overlay.toml",
        "[services.api]\ncommand = \"exec python3 srv.py\"\nbuild = \"sh build.sh\"\nport = 8080\n",
    );
    let pid = start_dev(&w, &a.host, "dev", &["-f", cfg.to_str().expect("utf-8")]);
    let v1 = wait_ready(&w, &a.host, "dev", "api", 1);
    assert!(curl_eventually(&w, &b.host, "http://api:8080/").starts_with("api v1 "));
    write(&dir, "version", "v2\n");
    write(&dir, "broken", "");
    let out = overlay(&w, &a.host, "restart api");
    assert!(
        !out.status.success(),
        "the restart reports the failed build"
    );
    let err = text(&out);
    assert!(err.contains("build of api failed"), "{err}");
    assert!(
        err.contains("expected one of"),
        "the build's output is shown: {err}"
    );
    assert!(
        curl(&w, &b.host, "http://api:8080/").starts_with(&format!("api v1 {v1}")),
        "the old version keeps serving"
    );
    assert!(w
        .log(&a.host, "dev")
        .contains("[build] src/main.rs:3: error"));
    // Fixed: the restart goes through.
    std::fs::remove_file(dir.join("broken")).expect("rm");
    let out = overlay(&w, &a.host, "restart api");
    assert!(out.status.success(), "{}", text(&out));
    wait_ready(&w, &a.host, "dev", "api", 2);
    assert!(curl(&w, &b.host, "http://api:8080/").starts_with("api v2 "));
    interrupt(&w, &a.host, "dev", pid);
}

#[test]
fn ctrl_c_leaves_no_process_and_no_registration_behind() {
    let (w, _relay, a, _b) = overlay_world("devstop");
    let dir = app(&a.host);
    let marker = dir.display().to_string();
    let cfg = write(
        &dir,
        "overlay.toml",
        &format!(
            r#"
[services.api]
command = "sleep 600 {marker}/child & exec python3 {marker}/srv.py"
port = 8080

[services.stubborn]
command = "trap '' TERM; python3 {marker}/srv.py; sleep 600"
port = 8080
stop_timeout = "1s"
"#
        ),
    );
    let pid = start_dev(&w, &a.host, "dev", &["-f", cfg.to_str().expect("utf-8")]);
    wait_ready(&w, &a.host, "dev", "api", 1);
    wait_ready(&w, &a.host, "dev", "stubborn", 1);
    assert!(!processes_with(&marker).is_empty());
    assert_eq!(
        a.services(&w)
            .iter()
            .filter(|s| s.where_ == Where::Local)
            .count(),
        2
    );
    interrupt(&w, &a.host, "dev", pid);
    assert_eq!(
        processes_with(&marker),
        "",
        "no process of the session is left"
    );
    let left: Vec<_> = a
        .services(&w)
        .into_iter()
        .filter(|s| s.where_ == Where::Local)
        .collect();
    assert!(left.is_empty(), "registrations are removed: {left:?}");
    let sockets = std::fs::read_dir(a.host.dir.join("run/dev-0"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(sockets, 0, "the session socket is removed");
}

#[test]
fn a_procfile_and_overlay_run_work_unchanged() {
    let (w, _relay, a, b) = overlay_world("devproc");
    let dir = app(&a.host);
    std::fs::write(dir.join("index.html"), "hello from a procfile\n").expect("index");
    let procfile = write(
        &dir,
        "Procfile",
        &format!(
            "web: cd {} && exec python3 -m http.server --bind 127.0.0.1 $PORT\nworker: while true; do echo working; sleep 1; done\n",
            dir.display()
        ),
    );
    let pid = start_dev(
        &w,
        &a.host,
        "dev",
        &["-f", procfile.to_str().expect("utf-8")],
    );
    wait_ready(&w, &a.host, "dev", "web", 1);
    let body = curl_eventually(&w, &b.host, "http://web/index.html");
    assert_eq!(body, "hello from a procfile\n");
    interrupt(&w, &a.host, "dev", pid);
    // `overlay run`: one service ad hoc, from the app's directory.
    let b_run = bin("overlay");
    w.spawn(
        &a.host,
        "run",
        &[
            ("OVERLAY_STATE_DIR", &format!("{}/state", a.host.dir.display())),
            ("OVERLAY_RUN_DIR", &format!("{}/run", a.host.dir.display())),
            ("NO_COLOR", "1"),
        ],
        &[
            "sh",
            "-c",
            &format!(
                "cd {} && exec {} run hello --port 9000 --tag v3 -- python3 -m http.server --bind 127.0.0.1 '$PORT'",
                dir.display(),
                b_run.display()
            ),
        ],
    );
    wait_ready(&w, &a.host, "run", "hello-v3", 1);
    let body = curl_eventually(&w, &b.host, "http://v3.hello:9000/index.html");
    assert_eq!(body, "hello from a procfile\n");
}

#[test]
fn logs_per_service_and_merged_in_time_order_local() {
    let mut w = World::new("devlogs");
    let h = w.add_host("a", 2);
    let dir = app(&h);
    // The two services take turns through their own log files: each line is printed only
    // once the other service's previous line is in its log (so it was read and timestamped),
    // which makes the true order api-1, db-1, api-2, ... however slow the machine is.
    let logs = h.dir.join("state/logs");
    let logs = logs.to_str().expect("utf-8");
    let wait_for = |file: &str, line: &str| {
        format!(
            "n=0; until grep -q {line} {logs}/{file}.log 2>/dev/null || [ $n -ge 1000 ]; do n=$((n+1)); sleep 0.01; done; sleep 0.02"
        )
    };
    let cfg = write(
        &dir,
        "overlay.toml",
        &format!(
            r#"
[services.api]
command = "for i in 1 2 3 4 5; do echo api-line-$i; {}; done; exec sleep 600"
health = {{ tcp = false }}

[services.db]
command = "for i in 1 2 3 4 5; do {}; echo db-line-$i; done; exec sleep 600"
health = {{ tcp = false }}
"#,
            wait_for("db", "db-line-$i"),
            wait_for("api", "api-line-$i"),
        ),
    );
    let pid = start_dev(
        &w,
        &h,
        "dev",
        &["--local", "-f", cfg.to_str().expect("utf-8")],
    );
    wait_ready(&w, &h, "dev", "api", 1);
    assert!(
        wait_until(Duration::from_secs(10), || w
            .log(&h, "dev")
            .contains("db-line-5")),
        "{}",
        w.log(&h, "dev")
    );
    // The log files have every line once `overlay logs` shows the last of each service.
    assert!(wait_until(Duration::from_secs(5), || {
        let all = String::from_utf8_lossy(&overlay(&w, &h, "logs -n 0").stdout).into_owned();
        all.contains("api-line-5") && all.contains("db-line-5")
    }));
    let out = overlay(&w, &h, "logs api -n 0");
    assert!(out.status.success(), "{}", text(&out));
    let api = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(api.lines().all(|l| l.contains(" api | ")), "{api}");
    assert_eq!(api.matches("api-line-").count(), 5, "{api}");
    let out = overlay(&w, &h, "logs -n 0");
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let ordered: Vec<&str> = all
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|t| t.contains("-line-"))
        .collect();
    let expected: Vec<String> = (1..=5)
        .flat_map(|i| [format!("api-line-{i}"), format!("db-line-{i}")])
        .collect();
    assert_eq!(ordered, expected, "merged by time:\n{all}");
    let clocks: Vec<&str> = all
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(clocks.windows(2).all(|p| p[0] <= p[1]), "{all}");
    // -n limits, and the files carry RFC3339 timestamps.
    let out = overlay(&w, &h, "logs db -n 2");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    let file = std::fs::read_to_string(h.dir.join("state/logs/api.log")).expect("log file");
    let first = file.lines().next().expect("a line");
    assert!(
        first.len() > 25 && &first[10..11] == "T" && &first[23..24] == "Z",
        "{first}"
    );
    // An unknown service is an error that lists the known ones.
    let out = overlay(&w, &h, "logs nope");
    assert!(!out.status.success());
    assert!(text(&out).contains("api, db"), "{}", text(&out));
    interrupt(&w, &h, "dev", pid);
}

#[test]
fn crashes_restart_with_backoff_and_watched_files_restart_local() {
    let mut w = World::new("devcrash");
    let h = w.add_host("a", 2);
    let dir = app(&h);
    std::fs::create_dir_all(dir.join("src")).expect("src");
    write(&dir, "src/lib.txt", "1");
    let cfg = write(
        &dir,
        "overlay.toml",
        r#"
[services.flaky]
command = "if [ ! -f crashed ]; then touch crashed; echo dying; exit 3; fi; exec python3 srv.py"

[services.watched]
command = "exec python3 srv.py"
watch = ["src/**/*.txt"]
"#,
    );
    let pid = start_dev(
        &w,
        &h,
        "dev",
        &["--local", "-f", cfg.to_str().expect("utf-8")],
    );
    wait_ready(&w, &h, "dev", "flaky", 1);
    let out = w.log(&h, "dev");
    assert!(out.contains("CRASHED with exit status 3"), "{out}");
    assert!(out.contains("restarting in 1 s"), "{out}");
    let first = wait_ready(&w, &h, "dev", "watched", 1);
    // The watcher polls every 500 ms and acts on a change against what it saw before: a change
    // made before its first look is not one. Nothing tells when that look was, so the file is
    // changed again (new content each time) until a restart shows it was seen.
    let mut n = 1;
    let seen = wait_until(Duration::from_secs(15), || {
        n += 1;
        write(&dir, "src/lib.txt", &n.to_string());
        wait_until(Duration::from_millis(1500), || {
            ready_pids(&w.log(&h, "dev"), "watched").len() >= 2
        })
    });
    assert!(seen, "the change was not seen:\n{}", w.log(&h, "dev"));
    let second = wait_ready(&w, &h, "dev", "watched", 2);
    assert_ne!(first, second);
    assert!(w.log(&h, "dev").contains("src/lib.txt changed; restarting"));
    // stop / start from another terminal.
    let out = overlay(&w, &h, "stop watched");
    assert!(out.status.success(), "{}", text(&out));
    assert!(wait_until(Duration::from_secs(5), || exited(second)));
    let out = overlay(&w, &h, "start watched");
    assert!(out.status.success(), "{}", text(&out));
    wait_ready(&w, &h, "dev", "watched", 3);
    let out = overlay(&w, &h, "restart nope");
    assert!(!out.status.success());
    assert!(text(&out).contains("no running overlay dev session has a service nope"));
    interrupt(&w, &h, "dev", pid);
}

#[test]
fn services_run_as_the_sudo_user_local() {
    let mut w = World::new("devuser");
    let h = w.add_host("a", 2);
    let dir = app(&h);
    for d in ["state", "run"] {
        std::fs::create_dir_all(h.dir.join(d)).expect("dir");
    }
    sh_output(&format!(
        "chown 65534:65534 {0}/state {0}/run",
        h.dir.display()
    ));
    let cfg = write(
        &dir,
        "overlay.toml",
        "[services.who]\ncommand = \"echo uid=$(id -u) gid=$(id -g) user=$USER; exec sleep 600\"\nhealth = { tcp = false }\n",
    );
    let pid = start_dev_env(
        &w,
        &h,
        "dev",
        &["--local", "-f", cfg.to_str().expect("utf-8")],
        &[("SUDO_UID", "65534"), ("SUDO_GID", "65534")],
    );
    assert!(
        wait_until(Duration::from_secs(10), || w
            .log(&h, "dev")
            .contains("uid=")),
        "{}",
        w.log(&h, "dev")
    );
    let out = w.log(&h, "dev");
    assert!(out.contains("uid=65534 gid=65534"), "{out}");
    let owner = sh_output(&format!(
        "stat -c %u {}/state/logs/who.log",
        h.dir.display()
    ));
    assert_eq!(String::from_utf8_lossy(&owner.stdout).trim(), "65534");
    interrupt(&w, &h, "dev", pid);
}

/// Runs `overlay dev` on a config file outside any world (no root, no daemon needed).
fn dev_on(name: &str, content: &str) -> (std::process::Output, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "overlay-devbad-{}-{}",
        std::process::id(),
        name.replace('/', "_")
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let file = write(&dir, name, content);
    let out = std::process::Command::new(bin("overlay"))
        .args(["dev", "-f"])
        .arg(&file)
        .env("OVERLAY_STATE_DIR", dir.join("state"))
        .env("OVERLAY_RUN_DIR", dir.join("run"))
        .current_dir(&dir)
        .output()
        .expect("overlay runs");
    (out, dir)
}

#[test]
fn bad_configs_are_refused_with_file_line_and_reason_before_anything_starts() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "overlay.toml",
            "[services.api]\ncommand = \"touch started\"\nportt = 8080\n",
            ":3: unknown field `portt`",
        ),
        (
            "overlay.toml",
            "[services.api]\ncommand = \"touch started\"\n\n[services.db]\nport = 5432\n",
            ":4: service db has no command",
        ),
        (
            "overlay.toml",
            "[services.a]\ncommand = \"touch started\"\ndepends_on = [\"b\"]\n\
             [services.b]\ncommand = \"touch started\"\ndepends_on = [\"a\"]\n",
            ":6: dependency cycle: a -> b -> a",
        ),
        (
            "overlay.toml",
            "[services.api]\ncommand = \"touch started\"\n\
             [services.api-copy]\nname = \"api\"\ncommand = \"touch started\"\n",
            ":3: services api-copy and api (line 1) both have name api and no tag",
        ),
        (
            "overlay.toml",
            "[services.api]\ncommand = \"touch started\"\ndepends_on = [\"db\"]\n",
            ":3: service api depends on db, which is not defined here",
        ),
        (
            "Procfile",
            "web: touch started\nweb: touch started\n",
            ":2: service web is defined twice",
        ),
        (
            "Procfile",
            "web touch started\n",
            ":1: expected 'name: command'",
        ),
    ];
    for (name, content, expected) in cases {
        let (out, dir) = dev_on(name, content);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{name} {content:?} was accepted");
        let shown = format!("{}{expected}", dir.join(name).display());
        assert!(err.contains(&shown), "expected {shown:?} in {err:?}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!dir.join("started").exists(), "nothing started");
        assert!(!dir.join("state/logs").exists(), "nothing started");
        let _ = std::fs::remove_dir_all(&dir);
    }
    // A bad .env beside a good config is refused too.
    let dir = std::env::temp_dir().join(format!("overlay-devbad-env-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    write(&dir, ".env", "GOOD=1\nNOT AN ASSIGNMENT\n");
    let cfg = write(
        &dir,
        "overlay.toml",
        "[services.api]\ncommand = \"touch started\"\n",
    );
    let out = std::process::Command::new(bin("overlay"))
        .args(["dev", "--local", "-f"])
        .arg(&cfg)
        .env("OVERLAY_STATE_DIR", dir.join("state"))
        .output()
        .expect("overlay runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(".env:2: expected KEY=VALUE"), "{err}");
    assert!(!dir.join("started").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_service_flooding_its_output_stays_bounded_local() {
    let mut w = World::new("devflood");
    let h = w.add_host("a", 2);
    let dir = app(&h);
    // 60 MB of short lines, then one 40 MB line without a newline break, then it idles.
    let cfg = write(
        &dir,
        "overlay.toml",
        "[services.flood]\ncommand = \"head -c 60000000 /dev/zero | tr '\\\\0' x | fold -w 100; \
         head -c 40000000 /dev/zero | tr '\\\\0' y; echo; echo flood-done; exec sleep 600\"\n\
         health = { tcp = false }\n",
    );
    let pid = start_dev(
        &w,
        &h,
        "dev",
        &["--local", "-f", cfg.to_str().expect("utf-8")],
    );
    let logs = h.dir.join("state/logs");
    let done = wait_until(Duration::from_secs(120), || {
        std::fs::read_to_string(logs.join("flood.log"))
            .map(|s| s.contains("flood-done"))
            .unwrap_or(false)
    });
    assert!(done, "the flood did not get through");
    // The log files are bounded by rotation: the current file and one old one.
    let total: u64 = std::fs::read_dir(&logs)
        .expect("logs dir")
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(
        total <= 2 * 10 * 1024 * 1024 + 1024 * 1024,
        "logs take {total} bytes"
    );
    // ... and the flood really went through them (the file was rotated).
    assert!(logs.join("flood.log.1").exists(), "no rotation happened");
    assert!(total > 10 * 1024 * 1024, "only {total} bytes of logs");
    // The runner's memory stayed small all along (peak RSS, not just now).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM");
    assert!(peak_kb < 64 * 1024, "overlay dev peaked at {peak_kb} kB");
    interrupt(&w, &h, "dev", pid);
}
