//! Event-based invalidation: application events name the keys and tags they make stale.

/// An application event that makes cached data stale. Implement it for your domain events and
/// pass them to [`CacheManager::invalidate_event`](crate::CacheManager::invalidate_event): the
/// keys are deleted from both levels and the tags invalidated, in every instance.
///
/// ```no_run
/// use uno_cache::{CacheConfig, CacheManager, InvalidationEvent};
///
/// /// An order was shipped: the user's order list and every cached view tagged `orders` change.
/// struct OrderShipped {
///     user_id: u64,
/// }
///
/// impl InvalidationEvent for OrderShipped {
///     fn keys(&self) -> Vec<String> {
///         vec![format!("user:{}:orders", self.user_id)]
///     }
///     fn tags(&self) -> Vec<String> {
///         vec!["orders".to_owned()]
///     }
/// }
///
/// let cache = CacheManager::new(CacheConfig::from_toml_file("cache.toml")?)?;
/// cache.set_with_tags("report:daily", &vec![1u32, 2, 3], None, &["orders"])?;
/// cache.invalidate_event(&OrderShipped { user_id: 42 })?; // drops user:42:orders and report:daily
/// # Ok::<(), uno_cache::Error>(())
/// ```
pub trait InvalidationEvent {
    /// Keys this event makes stale (default none).
    fn keys(&self) -> Vec<String> {
        Vec::new()
    }

    /// Tags this event makes stale (default none).
    fn tags(&self) -> Vec<String> {
        Vec::new()
    }
}
