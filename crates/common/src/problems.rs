//! [`Problems`]: what a service's `Config::check` finds wrong, every problem at once, as
//! one message (`"a: must be set; b: must be at least 1"`).

use std::fmt::Display;

/// The problems found so far; [`Problems::into_result`] ends the check.
///
/// ```
/// use triton_common::problems::Problems;
///
/// let (listen, workers) = ("nowhere", 0);
/// let mut problems = Problems::new();
/// problems.when(
///     listen.parse::<std::net::SocketAddr>().is_err(),
///     format_args!("listen: {listen:?} is not host:port"),
/// );
/// problems.when(workers == 0, "workers: must be at least 1");
/// assert_eq!(
///     problems.into_result(),
///     Err("listen: \"nowhere\" is not host:port; workers: must be at least 1".to_string())
/// );
/// assert_eq!(Problems::new().into_result(), Ok(()));
/// ```
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    /// No problems yet.
    pub fn new() -> Self {
        Problems::default()
    }

    /// Starts from problems found elsewhere (a nested check), in their order.
    pub fn from_found(found: impl IntoIterator<Item = impl Display>) -> Self {
        Problems(found.into_iter().map(|p| p.to_string()).collect())
    }

    /// Adds `problem`.
    pub fn push(&mut self, problem: impl Display) {
        self.0.push(problem.to_string());
    }

    /// Adds `problem` when `bad`; the text is only made then, so `format_args!` costs
    /// nothing on a good config.
    pub fn when(&mut self, bad: bool, problem: impl Display) {
        if bad {
            self.push(problem);
        }
    }

    /// `Ok` when nothing was found, else every problem in the order found, joined by `"; "`.
    pub fn into_result(self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_keep_their_order() {
        let mut problems = Problems::from_found(["a: bad"]);
        problems.when(false, "b: never shown");
        problems.push(format_args!("c: {}", 3));
        problems.when(true, "d: shown");
        assert_eq!(
            problems.into_result(),
            Err("a: bad; c: 3; d: shown".to_string())
        );
    }
}
