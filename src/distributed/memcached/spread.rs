//! Blocking work over several hosts at once, one thread per host.
//!
//! A blocking call's hosts are driven from the caller's thread while each host has one command
//! to answer: every host is sent its command before any is read. A host's part of a batch over
//! [`MAX_BATCH`](super::commands::MAX_BATCH) keys is several commands, each sent once the one
//! before it was answered; driven from one thread, the hosts' later commands ran one host after
//! another, so a batch paid a round trip per command of every host in series (and a host that
//! did not answer spent the deadline of the others' later commands). Such a call gives each host
//! a thread of its own here, so the hosts run all their commands at once, each still with one
//! command in flight on one connection. So does a call with a host that has no idle connection:
//! its connect, made before its command is sent, can take the whole deadline (a host gone whose
//! address drops what is sent to it), and from one thread the hosts after it were then asked
//! only once the deadline had passed.

use std::thread::ScopedJoinHandle;

/// `work` on every one of `items` at once, the results in the items' order: the first on the
/// caller's thread, each other on a scoped thread of its own. An item whose thread the system
/// refuses (a limit on threads) runs on the caller's thread after the first, so the call still
/// gives every result, only later. `work` must bound its own time (the hosts' deadline): this
/// waits for every thread.
pub(super) fn each_at_once<T, R>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R>
where
    T: Sync,
    R: Send,
{
    let Some((first, others)) = items.split_first() else {
        return Vec::new();
    };
    let work = &work;
    std::thread::scope(|scope| {
        let threads: Vec<Result<ScopedJoinHandle<'_, R>, &T>> = others
            .iter()
            .map(|item| {
                std::thread::Builder::new()
                    // 15 bytes, all the kernel keeps of a name: a longer `uno-cache-memcached-…`
                    // would read as the I/O thread (`uno-cache-memca`) in /proc and debuggers.
                    .name("uno-cache-batch".to_owned())
                    .spawn_scoped(scope, move || work(item))
                    .map_err(|e| {
                        tracing::debug!(error = %e, "a host's part of a batch runs on the caller's thread: no thread could be started for it");
                        item
                    })
            })
            .collect();
        let mut results = Vec::with_capacity(items.len());
        results.push(work(first));
        for thread in threads {
            results.push(match thread {
                // A panic is a bug in `work`; it reaches the caller as if `work` had run on the
                // caller's thread.
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(item) => work(item),
            });
        }
        results
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_the_items_order() {
        let items: Vec<u32> = (0..5).collect();
        assert_eq!(each_at_once(&items, |i| i * 10), vec![0, 10, 20, 30, 40]);
        assert!(each_at_once(&[] as &[u32], |i| *i).is_empty());
    }

    #[test]
    fn every_item_runs_while_the_others_run() {
        // The first item (on the caller's thread) waits for word from every other: run one
        // after another, it would hear from none of them.
        let items: Vec<usize> = (0..3).collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let rx = std::sync::Mutex::new(rx);
        let heard = each_at_once(&items, |&i| {
            if i > 0 {
                tx.send(i).unwrap();
                return std::thread::current().name().map(str::to_owned);
            }
            let rx = rx.lock().unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let heard = (1..items.len())
                .filter(|_| rx.recv_timeout(deadline - std::time::Instant::now()).is_ok())
                .count();
            Some(heard.to_string())
        });
        assert_eq!(
            heard[0].as_deref(),
            Some("2"),
            "the first item heard from the others"
        );
        assert!(heard[1..]
            .iter()
            .all(|name| name.as_deref() == Some("uno-cache-batch")));
    }
}
