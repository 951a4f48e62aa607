//! The cache's own threads in this process, for the tests that count them.

/// The names (as the kernel keeps them: 15 bytes) of this process's threads that start with
/// `uno-cache-`.
pub fn cache_threads() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task (Linux)")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .filter(|name| name.starts_with("uno-cache-"))
        .collect();
    names.sort();
    names
}

/// [`cache_threads`] once it is empty, or at `deadline`, whichever comes first. A thread can
/// still be listed for a moment after it was joined: the kernel wakes the joiner when the thread
/// lets go of its memory, before it takes the thread out of `/proc`.
#[allow(dead_code)] // `redis_io_thread` includes this module and waits in its own loop
pub fn cache_threads_once_gone(deadline: std::time::Instant) -> Vec<String> {
    loop {
        let threads = cache_threads();
        if threads.is_empty() || std::time::Instant::now() >= deadline {
            return threads;
        }
        std::thread::yield_now();
    }
}

/// Waits until a thread named `name` (its first 15 bytes, as the kernel keeps them) is listed
/// (`listed = true`) or no longer is, failing after 10 s with the threads there are.
#[allow(dead_code)] // not every test that includes this module waits for one thread
pub fn until_thread(name: &str, listed: bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while cache_threads().iter().any(|t| t == name) != listed {
        assert!(
            std::time::Instant::now() < deadline,
            "{name} is {} listed: {:?}",
            if listed { "still not" } else { "still" },
            cache_threads()
        );
        std::thread::yield_now();
    }
}
