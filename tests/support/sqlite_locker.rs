//! Another process holding an SQLite store's write lock: the `sqlite3` shell inside
//! `BEGIN EXCLUSIVE` until released. Dropped unreleased (a failing test), it is killed.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};

use crate::support::process::KillOnDrop;

/// `sqlite3` (the command-line shell) holding the store's write lock until released.
pub struct Locker {
    child: KillOnDrop,
    stdin: ChildStdin,
}

impl Locker {
    pub fn hold(path: &Path) -> Locker {
        let mut child = KillOnDrop::new(
            Command::new("sqlite3")
                .arg(path)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect(
                    "the sqlite3 command (Debian package sqlite3; scripts/test-env installs it)",
                ),
        );
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b".timeout 10000\nBEGIN EXCLUSIVE;\nSELECT 'locked';\n")
            .unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked", "sqlite3 took the write lock");
        Locker { child, stdin }
    }

    /// Commits, so the lock is free again, and waits for `sqlite3` to quit.
    pub fn release(mut self) {
        self.stdin.write_all(b"COMMIT;\n.quit\n").unwrap();
        drop(self.stdin);
        assert!(self.child.wait().unwrap().success());
    }
}
