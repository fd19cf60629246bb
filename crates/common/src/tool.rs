//! What Triton's command-line tools (`moray-cli`, `cnsadm`) share: their work run to its
//! end on a current-thread runtime.

use std::future::Future;

/// Runs `work` to its end on a current-thread runtime with IO and timers; an error when
/// the runtime cannot be started.
pub fn block_on<F: Future>(work: F) -> std::io::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(work))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_the_work_with_timers() {
        let out = block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            7
        });
        assert_eq!(out.unwrap(), 7);
    }
}
