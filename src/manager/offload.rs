//! Blocking maintenance work for the async API (`flush`, `replay_now`, draining the
//! write-behind queue): run on a short-lived thread of its own and awaited through a oneshot
//! channel, so it never blocks the caller's executor, whichever executor that is. These calls are
//! rare; the per-call thread is cheaper than a second, async copy of each of them.
//!
//! Dropping the returned future does not stop the work: it runs to its end, as a blocking call
//! would have.

use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// Runs `work` on a thread named `uno-cache-call-{name}` and awaits its result.
pub(crate) async fn offload<T: Send + 'static>(
    name: &'static str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    offload_unheard(name, (), move |()| work(), |(), _| {}).await
}

/// [`offload`] of `work` on `state` (kept until the thread ends), whose result, if the caller
/// dropped the future before it came, goes to `unheard`: a report that must reach someone
/// (a flush's loss of write-behind writes) is kept for the next call then.
pub(crate) async fn offload_unheard<T: Send + 'static, S: Send + 'static>(
    name: &'static str,
    state: S,
    work: impl FnOnce(&S) -> Result<T> + Send + 'static,
    unheard: impl FnOnce(&S, Result<T>) + Send + 'static,
) -> Result<T> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("uno-cache-call-{name}"))
        .spawn(move || {
            if let Err(result) = tx.send(work(&state)) {
                unheard(&state, result);
            }
        })
        .map_err(|e| Error::Backend {
            level: "manager",
            op: name,
            reason: format!("cannot start a thread for {name}: {e}"),
        })?;
    rx.await.map_err(|_| Error::Backend {
        level: "manager",
        op: name,
        reason: format!("the {name} thread stopped without an answer"),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_work_runs_on_its_own_thread_and_its_result_comes_back() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let caller = std::thread::current().id();
        let (name, other_thread) = rt
            .block_on(offload("test", move || {
                let me = std::thread::current();
                Ok((me.name().map(str::to_owned), me.id() != caller))
            }))
            .unwrap();
        assert_eq!(name.as_deref(), Some("uno-cache-call-test"));
        assert!(other_thread);
        let err = rt.block_on(offload::<()>("test", || {
            Err(Error::Timeout {
                level: "x",
                op: "y",
                server: "z".into(),
                after: std::time::Duration::from_millis(1),
            })
        }));
        assert!(matches!(err, Err(Error::Timeout { .. })));
    }
}
