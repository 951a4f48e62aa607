//! The process-wide [`CacheManager`]: initialised once at start-up, then reachable from anywhere.

use std::sync::OnceLock;

use parking_lot::Mutex;

use super::CacheManager;
use crate::config::CacheConfig;
use crate::error::{Error, Result};

static GLOBAL: OnceLock<CacheManager> = OnceLock::new();

/// Held by `init_global` from its check until the manager is set: two callers at once would
/// both pass the check and both open the stores, and the second got the first's lock error
/// (or built a whole manager to drop), not `GlobalAlreadyInitialized`.
static INIT: Mutex<()> = Mutex::new(());

impl CacheManager {
    /// Builds the process-wide manager from `config` and returns it.
    ///
    /// The instance lives until the process exits and is never dropped, so nothing a drop does
    /// happens by itself: call [`CacheManager::flush`] before exiting. It sends the writes still
    /// queued for L2 with `write_mode = "behind"` (without it they are lost at exit, and L2 and
    /// the other instances keep the older values until they expire), and makes L1's writes
    /// survive a power loss (see [`Durability`](crate::Durability) for what survives the exit
    /// alone).
    ///
    /// # Errors
    /// [`Error::GlobalAlreadyInitialized`] on a second call (nothing is opened then); otherwise
    /// as [`CacheManager::new`].
    pub fn init_global(config: CacheConfig) -> Result<&'static CacheManager> {
        let _only_one = INIT.lock();
        if GLOBAL.get().is_some() {
            return Err(Error::GlobalAlreadyInitialized);
        }
        set_global(CacheManager::new(config)?)
    }

    /// Makes `manager` (for example one from [`CacheManager::builder`]) the process-wide one.
    ///
    /// # Errors
    /// [`Error::GlobalAlreadyInitialized`] if there already is one.
    pub fn init_global_with(manager: CacheManager) -> Result<&'static CacheManager> {
        let _only_one = INIT.lock();
        set_global(manager)
    }

    /// The process-wide manager.
    ///
    /// # Errors
    /// [`Error::GlobalNotInitialized`] before [`CacheManager::init_global`].
    pub fn get_instance() -> Result<&'static CacheManager> {
        GLOBAL.get().ok_or(Error::GlobalNotInitialized)
    }
}

/// Makes `manager` the process-wide one; the caller holds [`INIT`].
fn set_global(manager: CacheManager) -> Result<&'static CacheManager> {
    // Already set: `set` hands ours back and it is dropped.
    GLOBAL.set(manager).map_err(|_| Error::GlobalAlreadyInitialized)?;
    CacheManager::get_instance()
}
