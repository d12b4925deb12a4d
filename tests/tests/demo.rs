//! The demo is an end-to-end test too: it must run to its end with every step working, twice
//! in a row and after an interrupted run, and leave nothing behind.

use overlay_tests::world::wait_until;
use std::process::Command;
use std::time::Duration;

fn demo_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo.sh")
}

fn run_demo() -> (bool, String) {
    let out = Command::new("bash")
        .arg(demo_script())
        .env("NO_COLOR", "1")
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn leftovers() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("ovd-"))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn demo_runs_to_the_end_twice_and_after_an_interrupted_run() {
    let (ok, text) = run_demo();
    assert!(ok, "the demo failed:\n{text}");
    assert!(text.contains(" 0 failed"), "{text}");
    for step in [
        "http://checkout:8080 answered",
        "v2.checkout:8080 is v2",
        "the webhook from the remote environment reached the laptop",
        "remote -> http://",
        "requests during the restart, 0 failed",
    ] {
        assert!(text.contains(step), "missing step '{step}':\n{text}");
    }
    assert_eq!(leftovers(), "", "the demo left namespaces behind");

    // Interrupted in the middle: the next run cleans up and works.
    let mut child = Command::new("bash")
        .arg(demo_script())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    // In the middle: once the demo has built its namespaces.
    wait_until(Duration::from_secs(60), || !leftovers().is_empty());
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let (ok, text) = run_demo();
    assert!(ok, "the demo failed after an interrupted run:\n{text}");
    assert_eq!(leftovers(), "", "the demo left namespaces behind");
}
