//! redb's panics on the main thread, kept off stderr: the store catches them and reports each as
//! an error.
//!
//! redb panics on a page it cannot parse instead of returning an error, and the store catches the
//! panic and fails the call with an error naming the file, the panic's message and what to do.
//! The default panic hook printed the panic first all the same (`thread 'main' panicked at
//! …/redb-…`), which reads as a crash of the tool. A hook is the whole process's, so the library
//! cannot leave it out; the tool, which owns its process, can. Only the main thread's are held
//! back: one there that nothing caught reaches [`run_caught`], which says it; one in a thread
//! of the library goes to the default hook, as every panic not raised in redb's code does.

use std::any::Any;
use std::io::{self, Write};
use std::panic::{self, AssertUnwindSafe, Location};
use std::process::ExitCode;
use std::sync::{Mutex, PoisonError};

/// The last panic raised in redb's code on the main thread, held back from stderr.
static HELD: Mutex<Option<String>> = Mutex::new(None);

/// Runs `main`, redb's panics on this (the main) thread held back from stderr; one that nothing
/// caught is said here, and exits 101, as an uncaught panic does.
pub(crate) fn run_caught(main: impl FnOnce() -> ExitCode) -> ExitCode {
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| match info.location() {
        Some(at) if in_redb(at) && std::thread::current().name() == Some("main") => {
            let message = format!("panicked at {at}: {}", text(info.payload()));
            *HELD.lock().unwrap_or_else(PoisonError::into_inner) = Some(message);
        }
        _ => default(info),
    }));
    panic::catch_unwind(AssertUnwindSafe(main)).unwrap_or_else(|_| {
        if let Some(held) = HELD.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = writeln!(io::stderr(), "uno-cache: redb {held}");
        }
        ExitCode::from(101)
    })
}

/// True for a source file of the redb crate: its directory is `redb-{version}` in the registry,
/// `redb-{hash}` in a git checkout. Not this crate's own `src/local/redb`, whose panics are bugs
/// to be seen.
fn in_redb(at: &Location<'_>) -> bool {
    std::path::Path::new(at.file()).components().any(|c| {
        c.as_os_str()
            .to_str()
            .is_some_and(|name| name.starts_with("redb-"))
    })
}

fn text(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
