//! [`load_text`]: a service's config loaded from the text of its file and a given
//! environment, for the tests of a service's config keys (no temporary directory and
//! file written by each test).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{ConfigError, load_from};

/// [`load_from`] of `text` as the file `<service>.toml`, with the environment `pairs`:
/// `load_text::<Config>("cnapi", "storage = \"memory\"\n", &[("CNAPI_LISTEN", "0.0.0.0:9")])`.
///
/// The file is written in a directory of its own under the system's temporary
/// directory, removed again once loaded; one that cannot be written fails as
/// [`ConfigError::Read`] of its path.
pub fn load_text<T>(service: &str, text: &str, pairs: &[(&str, &str)]) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "{service}-config-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let path = dir.join(format!("{service}.toml"));
    let loaded = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, text))
        .map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })
        .and_then(|()| load_from(service, Some(&path), &crate::pairs::owned::<Vec<_>>(pairs)));
    // Only the test's own directory; a leftover in the temporary directory is harmless.
    let _ = std::fs::remove_dir_all(&dir);
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, serde::Deserialize)]
    #[serde(default)]
    struct Conf {
        listen: String,
        workers: u32,
    }

    #[test]
    fn the_text_and_the_environment_set_the_keys() {
        let c: Conf =
            load_text("svc", "listen = \"0.0.0.0:1\"\n", &[("SVC_WORKERS", "4")]).expect("loads");
        assert_eq!((c.listen.as_str(), c.workers), ("0.0.0.0:1", 4));
        let bad = load_text::<Conf>("svc", "workers = \"many\"\n", &[]);
        assert!(matches!(bad, Err(ConfigError::Invalid(_))), "{bad:?}");
    }
}
