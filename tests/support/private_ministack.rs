//! A ministack of a test's own on a free port, persisting its state in a temporary directory,
//! for drills that stop the AWS endpoint and start it again; the shared emulator is never
//! touched. Dropping it stops the emulator (which removes the containers it started),
//! removes any container still labelled with its address, and removes the directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::env::TestEnv;
use crate::support::docker::remove_containers;

/// The host part of the instance label ministack puts on the containers it starts.
const HOSTNAME: &str = "envelope-drill";

/// A ministack of the test's own on `127.0.0.1:<port>`, persisting its state in `dir/state`.
pub struct PrivateMinistack {
    dir: PathBuf,
    port: u16,
    region: String,
    python: PathBuf,
    docker_cli: String,
    process: Option<Child>,
    /// How many times it was started (each start logs to its own file).
    starts: usize,
}

impl PrivateMinistack {
    pub async fn start(env: &TestEnv) -> PrivateMinistack {
        let dir = tempfile::Builder::new()
            .prefix("envelope-ministack-")
            .tempdir()
            .unwrap()
            .keep();
        // A port nobody holds right now; ministack binds it a moment later.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let python = Path::new(env.var("ENVELOPE_TEST_ENV_DIR")).join("ministack/venv/bin/python");
        let mut ministack = PrivateMinistack {
            dir,
            port,
            region: env.region().to_owned(),
            python,
            docker_cli: env.docker_cli().to_owned(),
            process: None,
            starts: 0,
        };
        ministack.launch().await;
        ministack
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().expect("ministack runs").id()
    }

    /// Starts ministack on the state directory and waits until it is ready.
    pub async fn launch(&mut self) {
        assert!(self.process.is_none(), "the private ministack already runs");
        self.starts += 1;
        std::fs::create_dir_all(self.dir.join("tmp")).unwrap();
        let log =
            std::fs::File::create(self.dir.join(format!("ministack-{}.log", self.starts))).unwrap();
        let child = Command::new(&self.python)
            .args(["-m", "ministack"])
            .env("BIND_HOST", "127.0.0.1")
            .env("GATEWAY_PORT", self.port.to_string())
            .env("MINISTACK_HOSTNAME", HOSTNAME)
            .env("MINISTACK_REGION", &self.region)
            .env("PERSIST_STATE", "1")
            .env("STATE_DIR", self.dir.join("state"))
            .env("TMPDIR", self.dir.join("tmp"))
            .env("LOG_LEVEL", "INFO")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.process = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) =
                crate::support::http::get(&format!("{}/_ministack/ready", self.url())).await
            {
                return;
            }
            if let Some(status) = self.process.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "the private ministack exited ({status}) while starting:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the private ministack was not ready within 60 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the process ends on its own (after the proxy's SIGTERM).
    pub fn wait_stopped(&mut self) -> ExitStatus {
        let child = self.process.as_mut().expect("ministack runs");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.process = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ministack did not stop within 30 s of SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The names of the services whose state ministack saved.
    pub fn saved_state(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.join("state"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("ministack-{}.log", self.starts)))
            .unwrap_or_default()
    }
}

impl Drop for PrivateMinistack {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            // SIGTERM: ministack removes the containers it started before it exits.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever it could not remove (a kill, a daemon that was slow to answer).
        remove_containers(
            &self.docker_cli,
            &format!("label=ministack.instance={HOSTNAME}:{}", self.port),
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
