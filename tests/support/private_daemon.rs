//! A `dockerd` of a test's own (with its own containerd, data root, exec root and a bridge of
//! its own, so that `RUN` steps have a network) under a short temporary directory, for drills
//! that kill the daemon; the shared test daemon is never touched. Dropping it kills whatever
//! is left of the daemon, unmounts what it left mounted under its directory, deletes its
//! bridge and removes the directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::process_tree::{descendants, kill_all, processes_naming, wait_until_dead};

/// A `dockerd` of the test's own, reached at `unix://<dir>/docker.sock`.
pub struct PrivateDaemon {
    /// Short on purpose: a Unix socket path holds at most 108 bytes.
    dir: PathBuf,
    bridge: String,
    daemon: Option<Child>,
    /// How many times the daemon was started (each start logs to its own file).
    starts: usize,
    /// More `dockerd` arguments (another listener, TLS).
    extra_args: Vec<String>,
}

impl PrivateDaemon {
    pub fn start() -> PrivateDaemon {
        PrivateDaemon::start_with(Vec::new())
    }

    /// [`PrivateDaemon::start`] with more `dockerd` arguments.
    pub fn start_with(extra_args: Vec<String>) -> PrivateDaemon {
        let dir = tempfile::Builder::new()
            .prefix("edr-")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        // Interface names hold at most 15 bytes.
        let bridge = format!("edr{:x}", std::process::id() & 0xff_ffff);
        let subnet_octet = std::process::id() % 250 + 1;
        let mut daemon = PrivateDaemon {
            dir,
            bridge,
            daemon: None,
            starts: 0,
            extra_args,
        };
        // Dropped (and cleaned up) if any of this fails.
        sh(&["ip", "link", "add", &daemon.bridge, "type", "bridge"]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("10.213.{subnet_octet}.1/24"),
            "dev",
            &daemon.bridge,
        ]);
        sh(&["ip", "link", "set", &daemon.bridge, "up"]);
        daemon.launch();
        daemon
    }

    /// The directory everything of the daemon's lives under.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// The DOCKER_HOST value for this daemon.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Starts `dockerd` on the data root and waits until it answers.
    pub fn launch(&mut self) {
        assert!(self.daemon.is_none(), "the private daemon already runs");
        self.starts += 1;
        let log =
            std::fs::File::create(self.dir.join(format!("dockerd-{}.log", self.starts))).unwrap();
        // Debian installs dockerd and runc in /usr/sbin, which a test's PATH may lack.
        let path = format!(
            "/usr/sbin:/usr/bin:/sbin:/bin:{}",
            std::env::var("PATH").unwrap_or_default()
        );
        let dockerd = ["/usr/bin/dockerd", "/usr/sbin/dockerd"]
            .into_iter()
            .find(|candidate| Path::new(candidate).is_file())
            .expect("dockerd is installed in /usr/bin or /usr/sbin");
        let child = Command::new(dockerd)
            .env("PATH", path)
            .arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(self.dir.join("data"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("docker.pid"))
            .args(["--bridge", &self.bridge])
            .args(["--iptables=false", "--ip-masq=false", "--ip6tables=false"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let version = self.docker(&["version", "--format", "{{.Server.Version}}"]);
            if version.status.success() {
                return;
            }
            if let Some(status) = self.daemon.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "the private dockerd exited ({status}) while starting:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the private dockerd did not answer within 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The `docker` CLI against this daemon.
    fn docker(&self, args: &[&str]) -> Output {
        Command::new("/usr/bin/docker")
            .arg("--host")
            .arg(self.host())
            .args(args)
            .output()
            .unwrap()
    }

    /// Copies `image` from the daemon `docker_cli` talks to (`docker save | docker load`): a
    /// new daemon has no images and nothing can be pulled here.
    pub fn load_image(&self, docker_cli: &str, image: &str) {
        let output = Command::new("sh")
            .arg("-c")
            .arg("\"$1\" save \"$2\" | \"$1\" --host \"$3\" load")
            .args(["sh", docker_cli, image, &self.host()])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "loading {image} into the private daemon: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Whether the daemon has an image by this reference.
    pub fn has_image(&self, reference: &str) -> bool {
        self.docker(&["image", "inspect", reference])
            .status
            .success()
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().expect("the private daemon runs").id()
    }

    /// The log of the daemon's latest start.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("dockerd-{}.log", self.starts)))
            .unwrap_or_default()
    }

    /// SIGKILL to the daemon and every process under it, all at once; waits until none is
    /// left alive. Returns how many processes were killed.
    pub fn kill(&mut self) -> usize {
        let (killed, alive) = self.stop();
        assert!(
            alive.is_empty(),
            "still alive 10 s after SIGKILL: {alive:?}"
        );
        killed
    }

    /// [`PrivateDaemon::kill`] without the check: how many processes were killed and which
    /// of them are still alive.
    fn stop(&mut self) -> (usize, Vec<u32>) {
        let Some(mut daemon) = self.daemon.take() else {
            return (0, Vec::new());
        };
        let mut tree = descendants(daemon.id());
        tree.push(daemon.id());
        kill_all(&tree);
        let _ = daemon.wait();
        let alive = wait_until_dead(&tree);
        // The killed containerd is reparented to init, which here may leave it a zombie for a
        // while; the next dockerd would take that pid for a live containerd and wait for its
        // socket. A service manager that restarts Docker removes the stale pid file too.
        let _ = std::fs::remove_file(self.dir.join("exec/containerd/containerd.pid"));
        (tree.len(), alive)
    }
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        // Nothing here panics: a panic while the test unwinds would abort before the rest.
        let _ = self.stop();
        // Anything the daemon's processes left behind outside its tree (a shim that moved to
        // init) still names the directory.
        let stray = processes_naming(&self.dir);
        kill_all(&stray);
        wait_until_dead(&stray);
        // A killed daemon leaves its overlay, namespace and bind mounts: deepest first.
        let mut mounts = mounts_under(&self.dir);
        mounts.sort_by_key(|mount| std::cmp::Reverse(mount.as_os_str().len()));
        for mount in mounts {
            let _ = Command::new("umount").arg("-l").arg(&mount).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `args`, which must succeed.
fn sh(args: &[&str]) {
    let output = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        output.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Mount points at or under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .filter(|point| point.starts_with(&prefix))
        .map(PathBuf::from)
        .collect()
}
