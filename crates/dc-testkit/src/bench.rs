//! What the benches (`harness = false`) share: their runtime, which of their parts a
//! command line asks for, and their knobs from the environment.

/// A multi-threaded tokio runtime with I/O and timers, for a bench's `main`.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Which parts of a bench to run: `cargo bench -p X --bench Y -- a b` asks for parts `a`
/// and `b`, no names for all of them (flags such as cargo's `--bench` are not names).
pub struct Parts(Vec<String>);

impl Parts {
    /// The parts this process's command line asks for.
    pub fn from_args() -> Parts {
        Parts(
            std::env::args()
                .skip(1)
                .filter(|a| !a.starts_with('-'))
                .collect(),
        )
    }

    /// Whether part `name` is to run.
    pub fn wants(&self, name: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|x| x == name)
    }
}

/// The number environment variable `key` holds, or `default` when it is unset or not a
/// number.
pub fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
