//! The Kubernetes manifests of docs/deploy.md ("Behind an HTTP ingress only") are valid against
//! the Kubernetes schemas, checked offline with `kubernetes-validate` (PyPI), and name only
//! environment variables the relay reads.

use overlay_tests::world::bin;
use std::process::Command;

const KUBERNETES: &str = "1.30.0";

/// The first ```yaml block after `heading` in docs/deploy.md.
fn manifest(heading: &str) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/deploy.md"))
        .expect("docs/deploy.md");
    let section = doc
        .split_once(heading)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("docs/deploy.md has no section {heading:?}"));
    let (_, rest) = section.split_once("```yaml\n").expect("a yaml block");
    let (yaml, _) = rest.split_once("\n```").expect("the block ends");
    yaml.to_string()
}

fn validate(yaml: &str, name: &str) -> std::process::Output {
    let path =
        std::env::temp_dir().join(format!("overlay-deploy-{}-{name}.yaml", std::process::id()));
    std::fs::write(&path, yaml).expect("manifest file");
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", KUBERNETES])
        .arg(&path)
        .output();
    let _ = std::fs::remove_file(&path);
    match out {
        Ok(o) => o,
        Err(e) => panic!(
            "kubernetes-validate cannot run ({e}): install it with \
             `pip install --break-system-packages kubernetes-validate` (.ci/run does)"
        ),
    }
}

#[test]
fn tp_ingress_only_manifests_validate_offline() {
    let yaml = manifest("## Behind an HTTP ingress only");
    for kind in ["kind: Deployment", "kind: Service", "kind: Ingress"] {
        assert!(yaml.contains(kind), "the manifest lacks {kind}");
    }
    let out = validate(&yaml, "good");
    assert!(
        out.status.success(),
        "docs/deploy.md's manifests do not validate: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The validator does refuse a broken manifest (so the check above means something).
    let broken = yaml.replace("replicas: 1", "replicas: one");
    assert!(!validate(&broken, "bad").status.success());
}

#[test]
fn tp_ingress_only_manifest_uses_real_relay_variables() {
    let yaml = manifest("## Behind an HTTP ingress only");
    let help = Command::new(bin("overlay-relay"))
        .args(["serve", "--help"])
        .output()
        .expect("overlay-relay runs");
    let help = String::from_utf8_lossy(&help.stdout);
    for var in yaml
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("OVERLAY_RELAY_"))
    {
        assert!(
            help.contains(var),
            "{var} is not a variable of overlay-relay serve"
        );
    }
}
