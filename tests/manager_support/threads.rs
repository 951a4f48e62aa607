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
