//! The dependency rule, checked on `cargo metadata`: a service crate never depends on
//! another service crate (it talks to it over gRPC through `triton-proto`), and only this
//! test kit (and the cross-service `tests` member) has service crates as dependencies;
//! services take the kit as a dev-dependency only.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};

/// The crates that are services (or the operator tool that deploys them).
const SERVICES: &[&str] = &[
    "cloudapi", "vmapi", "napi", "cnapi", "imgapi", "papi", "ufds", "moray", "manatee", "cn-agent",
    "portolan", "sdcadm", "booter", "cmon", "cns", "volapi",
];

/// Crates that may depend on services in any way.
const KITS: &[&str] = &["dc-testkit", "triton-e2e"];

/// Edges that exist on purpose: (from, to, kind, why).
const EXCEPTIONS: &[(&str, &str, &str, &str)] = &[
    (
        "triton-testkit",
        "moray",
        "normal",
        "MorayFixture (feature `moray`): every service's tests run on a real Moray, and \
         Moray depends on no other service",
    ),
    (
        "moray-client",
        "moray",
        "dev",
        "the client's tests and benches run the server end of the same protocol with \
         their own configs",
    ),
];

/// Every edge of `metadata` that breaks the rule, as `from -> to (kind)`.
fn violations(metadata: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let packages = metadata["packages"].as_array().expect("packages");
    for package in packages {
        let from = package["name"].as_str().expect("package name");
        if KITS.contains(&from) {
            continue;
        }
        for dep in package["dependencies"].as_array().expect("dependencies") {
            let to = dep["name"].as_str().expect("dependency name");
            let kind = dep["kind"].as_str().unwrap_or("normal");
            let is_service = SERVICES.contains(&to);
            let exception = EXCEPTIONS
                .iter()
                .any(|(f, t, k, _)| *f == from && *t == to && *k == kind);
            let edge = format!("{from} -> {to} ({kind})");
            if to == "dc-testkit" && kind != "dev" {
                out.push(format!(
                    "{edge}: the test kit is a dev-dependency only (tests and benches)"
                ));
            } else if is_service && !exception {
                let rule = match (SERVICES.contains(&from), kind) {
                    (true, "dev") | (false, "dev") => {
                        "a service is started in tests through dc-testkit (its \
                         `services` module), not as a dev-dependency"
                    }
                    (true, _) => {
                        "a service never depends on another service; use its gRPC client from triton-proto"
                    }
                    (false, _) => "only dc-testkit depends on service crates",
                };
                out.push(format!("{edge}: {rule}"));
            }
        }
    }
    out
}

#[test]
fn no_service_depends_on_another_and_only_the_kit_depends_on_services() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata is JSON");
    let names: Vec<&str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for service in SERVICES {
        assert!(
            names.contains(service),
            "service crate {service} is not in the workspace: update SERVICES"
        );
    }
    let bad = violations(&metadata);
    assert!(
        bad.is_empty(),
        "dependency rule broken (docs/architecture.md, \"Testing\"):\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_check_names_each_kind_of_offending_edge() {
    let dep = |name: &str, kind: Option<&str>| json!({ "name": name, "kind": kind });
    let metadata = json!({ "packages": [
        { "name": "vmapi", "dependencies": [dep("napi", None), dep("triton-proto", None)] },
        { "name": "cloudapi", "dependencies": [dep("ufds", Some("build"))] },
        { "name": "napi", "dependencies": [dep("cnapi", Some("dev")), dep("dc-testkit", Some("dev"))] },
        { "name": "imgapi", "dependencies": [dep("dc-testkit", None)] },
        { "name": "triton-common", "dependencies": [dep("papi", None)] },
        { "name": "triton-testkit", "dependencies": [dep("moray", None)] },
        { "name": "dc-testkit", "dependencies": [dep("vmapi", None)] },
    ]});
    assert_eq!(
        violations(&metadata)
            .iter()
            .map(|v| v.split(':').next().unwrap_or_default())
            .collect::<Vec<_>>(),
        [
            "vmapi -> napi (normal)",
            "cloudapi -> ufds (build)",
            "napi -> cnapi (dev)",
            "imgapi -> dc-testkit (normal)",
            "triton-common -> papi (normal)",
        ]
    );
}
