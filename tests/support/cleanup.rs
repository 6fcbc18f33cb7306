//! Clean-up from a fixture's `Drop`: the test's runtime may be shutting down (or be a
//! current-thread runtime that cannot block), so the clean-up runs on a thread and runtime of
//! its own, and `Drop` waits for it.

use std::future::Future;

/// Runs `cleanup` to the end on a new thread with a runtime of its own; a panic in it is
/// ignored (a clean-up must not turn a test's failure into an abort).
pub fn on_own_runtime<F>(cleanup: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(cleanup);
    })
    .join();
}
