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

#[test]
fn front_manifests_validate_offline_and_point_the_name_at_the_front() {
    let yaml = manifest("## Intercepts: a front for a service");
    let out = validate(&yaml, "front");
    assert!(
        out.status.success(),
        "docs/deploy.md's front manifests do not validate: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The catalog's front port is the targetPort of the Service `orders`, which selects the
    // relay; the real pods are behind `orders-backend`, the catalog's address.
    let front_port = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("front = \"0.0.0.0:"))
        .and_then(|r| r.split('"').next())
        .expect("a front in the catalog");
    let docs: Vec<&str> = yaml.split("\n---\n").collect();
    let orders = docs
        .iter()
        .find(|d| d.contains("metadata: { name: orders }"))
        .expect("a Service orders");
    assert!(
        orders.contains("selector: { app: overlay-relay }"),
        "{orders}"
    );
    assert!(
        orders.contains(&format!("targetPort: {front_port}")),
        "{orders}"
    );
    let backend = docs
        .iter()
        .find(|d| d.contains("metadata: { name: orders-backend }"))
        .expect("a Service orders-backend");
    assert!(backend.contains("selector: { app: orders }"), "{backend}");
    // The catalog in the ConfigMap is one the relay reads, with the front.
    let toml: String = yaml
        .split_once("catalog.toml: |\n")
        .expect("the catalog")
        .1
        .lines()
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", &l[4..]))
        .collect();
    let catalog = overlay_core::relay::catalog::parse_catalog(&toml).expect("the catalog parses");
    let front = catalog.fronts.first().expect("a front");
    assert_eq!(front.service, "orders");
    assert_eq!(front.listen.port().to_string(), front_port);
    assert!(front.address.starts_with("orders-backend."), "{toml}");
    // A broken one is refused.
    let broken = yaml.replace("targetPort: 18080", "targetPort: [18080]");
    assert!(!validate(&broken, "front-bad").status.success());
}
