//! `overlay dev` on real projects: Procfile names as written, workers that listen nowhere,
//! health checks that close cleanly, and restarts that drain the old process's connections
//! (a line-echo connection kept across a restart, a WebSocket closed with code 1012).
//!
//! Services are small Python programs (the standard library, and Debian's python3-websockets
//! for the WebSocket test) written into the test's directory. Tests marked "local" use
//! `overlay dev --local`; the others run in a world with a relay and two nodes, `a` running the
//! services and `b` calling them.

use overlay_core::api::session::ServiceState;
use overlay_core::names::resolver::Where;
use overlay_tests::overlay::{join_node, overlay, start_relay, Node, Relay};
use overlay_tests::world::{bin, sh_output, wait_until, Host, World};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A line-echo server on 127.0.0.1:$PORT: every line comes back as `PID LINE`. It ignores
/// SIGTERM for 0.1 s and then exits: connections it still has are the runner's to drain.
const ECHO: &str = r#"
import os, signal, socket, sys, threading, time
pid = os.getpid()
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', int(os.environ['PORT'])))
srv.listen(64)
def serve(c):
    f = c.makefile('rwb')
    for line in f:
        f.write(b'%d %s' % (pid, line))
        f.flush()
    c.close()
def accept():
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
threading.Thread(target=accept, daemon=True).start()
signal.signal(signal.SIGTERM, lambda *a: (time.sleep(0.1), os._exit(0)))
print('echo', pid, 'on', os.environ['PORT'], flush=True)
while True:
    time.sleep(3600)
"#;

/// The client of the drain test, run on the other node: one connection held across the
/// restart, one opened after it. Steps are driven by files in `argv[2]`.
const HOLDER: &str = r#"
import os, socket, sys, time
host, port = sys.argv[1].rsplit(':', 1)
d = sys.argv[2]
def wait(name):
    end = time.time() + 120
    while not os.path.exists(os.path.join(d, name)):
        if time.time() > end:
            sys.exit('timed out waiting for ' + name)
        time.sleep(0.05)
def say(name, text):
    open(os.path.join(d, name + '.tmp'), 'w').write(text)
    os.rename(os.path.join(d, name + '.tmp'), os.path.join(d, name))
def ask(f, line):
    f.write(line.encode() + b'\n'); f.flush()
    return f.readline().decode().strip()
held = socket.create_connection((host, int(port)), timeout=30)
hf = held.makefile('rwb')
first = ask(hf, 'one')
say('first', first)
wait('restarted')
second = ask(hf, 'two')
fresh = socket.create_connection((host, int(port)), timeout=30)
ff = fresh.makefile('rwb')
new = ask(ff, 'three')
fresh.close()
say('result', '%s\n%s\n%s\n' % (first, second, new))
wait('close')
held.close()
"#;

/// A WebSocket server (python3-websockets) on $PORT that sends `tick N` every 50 ms.
const WS_SERVER: &str = r#"
import asyncio, os, websockets
async def ticks(ws, *path):
    n = 0
    while True:
        await ws.send('tick %d %d' % (os.getpid(), n))
        n += 1
        await asyncio.sleep(0.05)
async def main():
    async with websockets.serve(ticks, '127.0.0.1', int(os.environ['PORT'])):
        print('ws on', os.environ['PORT'], flush=True)
        await asyncio.Future()
asyncio.run(main())
"#;

/// A WebSocket client: reads until the server closes, writes the close code it got (`none`
/// for a connection that ended without a close frame) and how many ticks arrived.
const WS_CLIENT: &str = r#"
import asyncio, sys, websockets
async def main():
    url, out = sys.argv[1:3]
    got = 0
    code = 'none'
    async with websockets.connect(url) as ws:
        open(out + '.open', 'w').write('open\n')
        try:
            async for m in ws:
                got += 1
        except websockets.ConnectionClosed as e:
            pass
        code = str(ws.close_code) if ws.close_code is not None else 'none'
    open(out + '.tmp', 'w').write('%s %d\n' % (code, got))
    import os; os.rename(out + '.tmp', out)
asyncio.run(main())
"#;

/// A TCP service that greets every connection (as SMTP or MySQL do) and reports how the
/// connection ended: `clean close` for a FIN, `RESET` for a reset.
const GREETER: &str = r#"
import os, socket, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', int(os.environ['PORT'])))
srv.listen(16)
def serve(c):
    try:
        c.sendall(b'220 greeter ready\r\n')
        while True:
            b = c.recv(1024)
            if not b:
                print('clean close', flush=True)
                break
    except ConnectionResetError:
        print('RESET', flush=True)
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write");
    p
}

fn app(host: &Host) -> PathBuf {
    let dir = host.dir.join("app");
    std::fs::create_dir_all(&dir).expect("app dir");
    dir
}

/// Starts `overlay dev ARGS` in `host`; its output goes to `<host dir>/<log>.log`.
fn start_dev(w: &World, host: &Host, log: &str, args: &[&str]) -> u32 {
    let d = host.dir.display().to_string();
    let (state, run) = (format!("{d}/state"), format!("{d}/run"));
    let env: Vec<(&str, &str)> = vec![
        ("OVERLAY_STATE_DIR", &state),
        ("OVERLAY_RUN_DIR", &run),
        ("NO_COLOR", "1"),
        ("RUST_LOG", "warn"),
    ];
    let b = bin("overlay");
    let mut cmd = vec![b.to_str().expect("utf-8 path"), "dev"];
    cmd.extend_from_slice(args);
    w.spawn(host, log, &env, &cmd)
}

/// The `(pid, ms)` of every "ready" line of `key`, in order.
fn ready_lines(out: &str, key: &str) -> Vec<(u32, u64)> {
    out.lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(" | ")?;
            if name.split_whitespace().nth(1) != Some(key) {
                return None;
            }
            let rest = rest.strip_prefix("[overlay] ready in ")?;
            let ms = rest.split(" ms").next()?.parse().ok()?;
            let pid = rest.split("pid ").nth(1)?.split(',').next()?.parse().ok()?;
            Some((pid, ms))
        })
        .collect()
}

/// Waits until `key` was ready `times` times; returns the newest `(pid, ms)`.
fn wait_ready(w: &World, host: &Host, log: &str, key: &str, times: usize) -> (u32, u64) {
    let mut last = (0, 0);
    let ok = wait_until(Duration::from_secs(30), || {
        let r = ready_lines(&w.log(host, log), key);
        last = r.last().copied().unwrap_or((0, 0));
        r.len() >= times
    });
    assert!(ok, "{key} did not get ready:\n{}", w.log(host, log));
    last
}

fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().starts_with('Z'))
            .unwrap_or(true),
    }
}

fn interrupt(w: &World, host: &Host, log: &str, pid: u32) {
    sh_output(&format!("kill -INT {pid}"));
    assert!(
        wait_until(Duration::from_secs(20), || exited(pid)),
        "overlay dev did not stop:\n{}",
        w.log(host, log)
    );
}

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

fn read_when_there(path: &Path, what: &str, log: &dyn Fn() -> String) -> String {
    assert!(
        wait_until(Duration::from_secs(60), || path.exists()),
        "{what} did not arrive:\n{}",
        log()
    );
    std::fs::read_to_string(path).expect("read")
}

#[test]
fn dv_procfile_names_as_written_and_a_worker_that_never_listens() {
    let (w, _relay, a, b) = overlay_world("dvproc");
    let dir = app(&a.host);
    std::fs::write(dir.join("index.html"), "hello\n").expect("index");
    let procfile = write(
        &dir,
        "Procfile",
        "Web_App: exec python3 -m http.server --bind 127.0.0.1 $PORT\n\
         clock_worker: env > worker.tmp.$$ && mv worker.tmp.$$ worker.env.$$; while true; do echo tick; sleep 0.2; done\n",
    );
    let pid = start_dev(
        &w,
        &a.host,
        "dev",
        &["-f", procfile.to_str().expect("utf-8")],
    );
    let (worker_pid, worker_ms) = wait_ready(&w, &a.host, "dev", "clock_worker", 1);
    wait_ready(&w, &a.host, "dev", "Web_App", 1);
    let log = w.log(&a.host, "dev");
    eprintln!("the worker was known as one after {worker_ms} ms");
    // Told within about a second (not after the 30 s health timeout).
    assert!(worker_ms < 5_000, "worker took {worker_ms} ms:\n{log}");
    assert!(
        log.contains("clock_worker is clock-worker.ovl.internal on the overlay"),
        "the mapping is said once at start:\n{log}"
    );
    assert_eq!(
        log.matches("is clock-worker.ovl.internal on the overlay")
            .count(),
        1
    );
    assert!(
        log.contains("Web_App is web-app.ovl.internal on the overlay"),
        "{log}"
    );
    assert!(log.contains("a worker (it listens nowhere"), "{log}");
    assert!(!log.contains("nothing listens on $PORT"), "{log}");
    // The web process is reachable under its mapped name; the worker is not registered.
    assert_eq!(
        curl_eventually(&w, &b.host, "http://web-app/index.html"),
        "hello\n"
    );
    let list = a.services(&w);
    assert!(
        list.iter()
            .any(|s| s.name == "web-app" && s.where_ == Where::Local),
        "{list:?}"
    );
    assert!(
        !list.iter().any(|s| s.name == "clock-worker"),
        "a worker has no overlay address or SRV record: {list:?}"
    );
    // A restart of the worker takes the time the process takes, and it gets no address.
    let started = Instant::now();
    let out = overlay(&w, &a.host, "restart clock_worker");
    let took = started.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("a worker (no overlay address)"),
        "{}",
        text(&out)
    );
    let (new_pid, restart_ms) = wait_ready(&w, &a.host, "dev", "clock_worker", 2);
    eprintln!(
        "worker restart: {restart_ms} ms in the runner, {} ms for `overlay restart`",
        took.as_millis()
    );
    assert_ne!(new_pid, worker_pid);
    assert!(exited(worker_pid), "the old worker is gone");
    assert!(restart_ms < 5_000, "restart took {restart_ms} ms");
    // The new worker writes its environment (whole, by a rename) as it starts.
    let env_file = dir.join(format!("worker.env.{new_pid}"));
    assert!(wait_until(Duration::from_secs(10), || env_file.exists()));
    let env = std::fs::read_to_string(&env_file).expect("env");
    assert!(env.contains("OVERLAY_SERVICE=clock-worker\n"), "{env}");
    assert!(env.contains("PORT="), "{env}");
    assert!(!env.contains("OVERLAY_ADDRESS="), "{env}");
    assert!(!env.contains("OVERLAY_CALLBACK_URL="), "{env}");
    assert!(!a.services(&w).iter().any(|s| s.name == "clock-worker"));
    // At a glance: plain text when not a terminal, and the same as JSON.
    let ps = overlay(&w, &a.host, "ps");
    assert!(ps.status.success(), "{}", text(&ps));
    let table = String::from_utf8_lossy(&ps.stdout).into_owned();
    assert!(!table.contains('\x1b'), "no colour when piped: {table:?}");
    assert!(table.starts_with("SERVICE "), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("clock_worker "))
        .unwrap_or_else(|| panic!("no worker row: {table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1..3], ["running", &new_pid.to_string()], "{row}");
    assert_eq!(cells[4..6], ["worker", "1"], "{row}");
    assert!(row.contains("signal 15, "), "the old worker's end: {row}");
    let web = table
        .lines()
        .find(|l| l.starts_with("Web_App "))
        .expect("web row");
    assert!(web.contains(&a.local_address(&w, "web-app", None)), "{web}");
    let list: Vec<ServiceState> = a.json(&w, "ps --json");
    let worker = list
        .iter()
        .find(|s| s.key == "clock_worker")
        .expect("worker in ps --json");
    assert!(worker.worker, "{worker:?}");
    assert_eq!(worker.name, "clock-worker");
    assert_eq!(worker.restarts, 1);
    interrupt(&w, &a.host, "dev", pid);
}

#[test]
fn dv_health_checks_close_cleanly_local() {
    let mut w = World::new("dvhealth");
    let h = w.add_host("a", 2);
    let dir = app(&h);
    write(&dir, "greeter.py", GREETER);
    std::fs::write(dir.join("index.html"), "hello\n").expect("index");
    let cfg = write(
        &dir,
        "overlay.toml",
        r#"
[services.web]
command = "exec python3 -m http.server --bind 127.0.0.1 $PORT"
health = { http = "/" }

[services.greeter]
command = "exec python3 greeter.py"
health = { tcp = true }
"#,
    );
    let pid = start_dev(
        &w,
        &h,
        "dev",
        &["--local", "-f", cfg.to_str().expect("utf-8")],
    );
    wait_ready(&w, &h, "dev", "web", 1);
    wait_ready(&w, &h, "dev", "greeter", 1);
    for key in ["web", "greeter"] {
        let out = overlay(&w, &h, &format!("restart {key}"));
        assert!(out.status.success(), "{}", text(&out));
        wait_ready(&w, &h, "dev", key, 2);
    }
    // Each TCP check ends with the greeter seeing a FIN.
    assert!(
        wait_until(Duration::from_secs(5), || w
            .log(&h, "dev")
            .matches("greeter | clean close")
            .count()
            >= 2),
        "{}",
        w.log(&h, "dev")
    );
    interrupt(&w, &h, "dev", pid);
    let log = w.log(&h, "dev");
    // The HTTP checks were answered (the server logs them) and left no traceback.
    assert!(log.contains("\"GET / HTTP/1.1\" 200"), "{log}");
    for bad in [
        "Traceback",
        "ConnectionResetError",
        "BrokenPipeError",
        "RESET",
    ] {
        assert!(!log.contains(bad), "{bad} in the output:\n{log}");
    }
}

#[test]
fn dv_a_connection_held_open_across_a_restart_is_drained() {
    let (w, _relay, a, b) = overlay_world("dvdrain");
    let dir = app(&a.host);
    write(&dir, "echo.py", ECHO);
    let cfg = write(
        &dir,
        "overlay.toml",
        "[services.echo]\ncommand = \"exec python3 echo.py\"\nport = 7000\ndrain = \"30s\"\n",
    );
    let pid = start_dev(&w, &a.host, "dev", &["-f", cfg.to_str().expect("utf-8")]);
    let (old, _) = wait_ready(&w, &a.host, "dev", "echo", 1);
    let addr = a.local_address(&w, "echo", None);
    let steps = b.host.dir.join("steps");
    std::fs::create_dir_all(&steps).expect("steps");
    let holder = write(&b.host.dir, "holder.py", HOLDER);
    w.spawn(
        &b.host,
        "holder",
        &[],
        &[
            "python3",
            holder.to_str().expect("utf-8"),
            &addr,
            steps.to_str().expect("utf-8"),
        ],
    );
    let logs = || format!("{}\n{}", w.log(&a.host, "dev"), w.log(&b.host, "holder"));
    let first = read_when_there(&steps.join("first"), "the first echo", &logs);
    assert_eq!(first, format!("{old} one"));
    // `overlay restart` answers once the drain is over: run it in the background.
    let restart_out = a.host.dir.join("restart.out");
    w.spawn(
        &a.host,
        "restart",
        &[],
        &[
            "sh",
            "-c",
            &format!(
                "OVERLAY_STATE_DIR={0}/state OVERLAY_RUN_DIR={0}/run {1} restart echo > {2}.tmp 2>&1; mv {2}.tmp {2}",
                a.host.dir.display(),
                bin("overlay").display(),
                restart_out.display()
            ),
        ],
    );
    let (new, _) = wait_ready(&w, &a.host, "dev", "echo", 2);
    assert_ne!(new, old);
    std::fs::write(steps.join("restarted"), "").expect("step");
    let result = read_when_there(&steps.join("result"), "the holder's result", &logs);
    let lines: Vec<&str> = result.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{old} one"),
            format!("{old} two"),
            format!("{new} three")
        ],
        "the held connection stays on the old process, a new one reaches the new process"
    );
    assert!(
        !exited(old),
        "the old process serves its connection until it closes"
    );
    assert!(!restart_out.exists(), "the restart waits for the drain");
    std::fs::write(steps.join("close"), "").expect("step");
    let out = read_when_there(&restart_out, "the restart's answer", &logs);
    assert!(out.contains("1 connection drained, 0 closed"), "{out}");
    assert!(
        wait_until(Duration::from_secs(10), || exited(old)),
        "old process ends"
    );
    interrupt(&w, &a.host, "dev", pid);
}

#[test]
fn dv_a_websocket_gets_close_code_1012_when_the_drain_times_out() {
    let (w, _relay, a, b) = overlay_world("dvws");
    let dir = app(&a.host);
    write(&dir, "ws.py", WS_SERVER);
    // Debian's python3 has python3-websockets.
    let cfg = write(
        &dir,
        "overlay.toml",
        "[services.ticks]\ncommand = \"exec /usr/bin/python3 ws.py\"\nport = 8765\ndrain = \"1s\"\n",
    );
    let pid = start_dev(&w, &a.host, "dev", &["-f", cfg.to_str().expect("utf-8")]);
    wait_ready(&w, &a.host, "dev", "ticks", 1);
    let addr = a.local_address(&w, "ticks", None);
    let client = write(&b.host.dir, "wsclient.py", WS_CLIENT);
    let result = b.host.dir.join("ws.result");
    w.spawn(
        &b.host,
        "wsclient",
        &[],
        &[
            "/usr/bin/python3",
            client.to_str().expect("utf-8"),
            &format!("ws://{addr}/"),
            result.to_str().expect("utf-8"),
        ],
    );
    let logs = || format!("{}\n{}", w.log(&a.host, "dev"), w.log(&b.host, "wsclient"));
    read_when_there(&b.host.dir.join("ws.result.open"), "the WebSocket", &logs);
    let out = overlay(&w, &a.host, "restart ticks");
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("0 connections drained, 1 closed (1 WebSocket with code 1012)"),
        "{said}"
    );
    let got = read_when_there(&result, "the client's close code", &logs);
    let mut f = got.split_whitespace();
    assert_eq!(f.next(), Some("1012"), "close code: {got}\n{}", logs());
    let ticks: u32 = f.next().and_then(|n| n.parse().ok()).expect("ticks");
    assert!(ticks > 5, "ticks arrived until the close: {got}");
    interrupt(&w, &a.host, "dev", pid);
}
