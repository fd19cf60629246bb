//! The `papi` program as an operator starts it: `--check-config` on a bad file exits 2
//! naming the key, on a good one prints OK and exits 0; `-c` still names the config.

// Tests fail by panicking; clippy.toml allows it in #[test] functions, this in helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn papi(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_papi"))
        .args(args)
        .env_remove("PAPI_CONFIG")
        .output()
        .expect("papi runs")
}

#[test]
fn check_config_exits_2_on_a_bad_file_and_0_on_a_good_one() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("papi-program");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "listen = 5\nno_such_key = true\n").unwrap();
    let bad = bad.to_str().unwrap();
    for flag in ["-f", "--config", "-c"] {
        let out = papi(&["--check-config", flag, bad]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(
            stderr.contains("papi: error: invalid configuration"),
            "{stderr}"
        );
        assert!(stderr.contains("listen (from "), "{stderr}");
        assert!(stderr.contains("no_such_key (from "), "{stderr}");
    }

    let good = dir.join("good.toml");
    std::fs::write(&good, "listen = \"127.0.0.1:0\"\n").unwrap();
    let out = papi(&["--check-config", "-f", good.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "papi: config OK"
    );
}
