//! A process a test starts and later waits for or kills itself (a runner it resumes in the
//! background, a command holding a lock), killed and reaped when dropped: a test that fails
//! while the process runs leaves nothing running behind it.

use std::ops::{Deref, DerefMut};
use std::process::{Child, Output};

/// A spawned child, killed (SIGKILL) and waited for when dropped, unless the test already
/// collected it with [`KillOnDrop::wait_with_output`].
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    pub fn new(child: Child) -> KillOnDrop {
        KillOnDrop(Some(child))
    }

    /// Waits for the process to end and collects what it printed (`Child::wait_with_output`).
    pub fn wait_with_output(mut self) -> std::io::Result<Output> {
        self.0
            .take()
            .expect("only this consuming method takes the child")
            .wait_with_output()
    }
}

impl Deref for KillOnDrop {
    type Target = Child;

    fn deref(&self) -> &Child {
        self.0
            .as_ref()
            .expect("only wait_with_output takes the child, and it consumes the guard")
    }
}

impl DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        self.0
            .as_mut()
            .expect("only wait_with_output takes the child, and it consumes the guard")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            // A child that already ended (and was waited for) ignores the kill.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
