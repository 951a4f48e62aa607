//! When written data reaches stable storage: the one durability setting of the file store and the
//! redb level, chosen in configuration. A bottom module, so that the configuration and every level
//! can name it without importing a level.

use std::time::Duration;

/// When written data reaches stable storage.
///
/// **File store**: whatever the policy, a write that returned is in the operating system's page
/// cache, so it survives the process being killed (even by SIGKILL); the policy decides what
/// survives a power loss or kernel crash.
///
/// **redb level**: a commit that is not durable lives in process memory only, until a later
/// durable commit (redb has no page-cache-only commit), so under `None` and `Periodic` a killed
/// process loses what a power loss would: with `Periodic(d)` up to the last `d` of writes (a
/// background thread commits durably every `d` when there were writes), with `None` everything
/// since the last flush or close. `EveryWrite` loses nothing acknowledged. Entries restored when
/// the store opens again are suspect (revalidated against L2 under the default restart policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Never fsync the active segment on its own; only [`FileStore::flush`](crate::FileStore::flush)
    /// and close do (full, sealed segments are fsynced by the background compactor's tick, and
    /// by a write that seals one while 16 others wait: each keeps its file open until then). A
    /// power loss can lose everything since the last of those (with redb, a process kill too).
    None,
    /// Group commit: a background thread fsyncs at this interval when there were writes.
    /// A power loss loses at most the last interval of writes (plus the fsync's own time); with
    /// redb, so does a process kill.
    Periodic(Duration),
    /// fsync before every write returns. Nothing acknowledged is lost; slowest.
    EveryWrite,
}

impl Default for Durability {
    /// `Periodic(1 s)`.
    fn default() -> Self {
        Durability::Periodic(Duration::from_secs(1))
    }
}
