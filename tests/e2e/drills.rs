//! Fault drills with real processes: the Docker daemon is SIGKILLed in the middle of a build,
//! then started again.
//!
//! The shared test daemon is never touched: the drill starts a private `dockerd` (with its own
//! containerd, data root, exec root and a bridge of its own, so that `RUN` steps have a
//! network) under a short temporary directory, loads the base image into it and points the
//! runner at it with DOCKER_HOST. Once the Dockerfile's `sleep` step runs inside that daemon,
//! the daemon and every process it started (containerd, runc, the step) get SIGKILL at once,
//! as when the machine's Docker service is killed. The run must fail as an environment error
//! (exit 6) that names the daemon; after the daemon is started again on the same data root,
//! `envelope-runner resume` points to `retry` (the run failed; it was not interrupted) and
//! `envelope-runner retry` must finish the run and push the image exactly once.
//!
//! `PrivateDaemon`'s drop kills whatever is left of the daemon, unmounts what it left mounted
//! under its directory, deletes its bridge and removes the directory.

use crate::support::{project_with, runner, stage, status_json, text};
use envelope_tests::env::{TestEnv, head_manifest, parts, unique};
use envelope_tests::git_fixture::WorkRepo;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long the Dockerfile's slow step sleeps: long enough to be killed in the middle of it.
const STEP_SECONDS: u32 = 8;

// ---------------------------------------------------------------- a private Docker daemon

/// A `dockerd` of the test's own, reached at `unix://<dir>/docker.sock`.
struct PrivateDaemon {
    /// Short on purpose: a Unix socket path holds at most 108 bytes.
    dir: PathBuf,
    bridge: String,
    daemon: Option<Child>,
    /// How many times the daemon was started (each start logs to its own file).
    starts: usize,
}

impl PrivateDaemon {
    fn start() -> PrivateDaemon {
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

    fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// The DOCKER_HOST value for this daemon.
    fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Starts `dockerd` on the data root and waits until it answers.
    fn launch(&mut self) {
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

    /// The daemon's pid, while it runs.
    fn pid(&self) -> u32 {
        self.daemon.as_ref().expect("the private daemon runs").id()
    }

    /// The log of the daemon's latest start.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("dockerd-{}.log", self.starts)))
            .unwrap_or_default()
    }

    /// SIGKILL to the daemon and every process under it, all at once; waits until none is
    /// left alive. Returns how many processes were killed.
    fn kill(&mut self) -> usize {
        let Some(mut daemon) = self.daemon.take() else {
            return 0;
        };
        let mut tree = descendants(daemon.id());
        tree.push(daemon.id());
        kill_all(&tree);
        let _ = daemon.wait();
        wait_until_dead(&tree);
        // The killed containerd is reparented to init, which here may leave it a zombie for a
        // while; the next dockerd would take that pid for a live containerd and wait for its
        // socket. A service manager that restarts Docker removes the stale pid file too.
        let _ = std::fs::remove_file(self.dir.join("exec/containerd/containerd.pid"));
        tree.len()
    }
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        self.kill();
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

fn sh(args: &[&str]) {
    let output = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        output.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every live process: pid to (parent pid, command name).
fn process_table() -> HashMap<u32, (u32, String)> {
    let mut table = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; the name may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().unwrap_or("");
        let parent = rest.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if state != "Z" && state != "X" {
            table.insert(pid, (parent, name));
        }
    }
    table
}

/// The live processes under `root` (not `root` itself).
fn descendants(root: u32) -> Vec<u32> {
    let table = process_table();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (pid, (ppid, _)) in &table {
            if *ppid == parent && !found.contains(pid) {
                found.push(*pid);
                frontier.push(*pid);
            }
        }
    }
    found
}

/// Live processes whose command line names `dir`.
fn processes_naming(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    process_table()
        .keys()
        .copied()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&needle))
        })
        .collect()
}

fn kill_all(pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-KILL")
        .args(pids.iter().map(u32::to_string))
        .output();
}

fn wait_until_dead(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let table = process_table();
        let alive: Vec<_> = pids.iter().filter(|pid| table.contains_key(pid)).collect();
        if alive.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still alive 10 s after SIGKILL: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Mount points at or under `dir`.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .filter(|point| point.starts_with(&prefix))
        .map(PathBuf::from)
        .collect()
}

/// A process under `root` whose root file system holds `/marker` with `marker` in it: the
/// drill's build step, once it has written the file.
fn step_under(root: u32, marker: &str) -> Option<u32> {
    descendants(root).into_iter().find(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/root/marker"))
            .is_ok_and(|text| text.trim() == marker)
    })
}

// ---------------------------------------------------------------- the drill

/// A repository whose Dockerfile sleeps for [`STEP_SECONDS`] in a `RUN` step, tagged
/// `v1.0.0`: the temporary directory, the served URL and the commit.
fn slow_app(env: &TestEnv, marker: &str) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(dir.path().join("work")).unwrap();
    let sha = repo
        .commit_file(
            "Dockerfile",
            &format!(
                "FROM {}\nRUN echo {marker} > /marker && sleep {STEP_SECONDS}\n",
                env.base_image()
            ),
            "slow app",
        )
        .unwrap();
    repo.tag("v1.0.0").unwrap();
    let bare = dir.path().join("app.git");
    repo.publish(&bare).unwrap();
    (dir, format!("file://{}", bare.display()), sha)
}

/// How many `stage_started` events for `name` the run's log holds.
fn stage_starts(env: &TestEnv, project: &Path, run: &str, name: &str) -> usize {
    let logs = runner(env, project)
        .args(["logs", run, "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(logs.status.code(), Some(0), "{}", text(&logs));
    String::from_utf8_lossy(&logs.stdout)
        .lines()
        .filter(|line| {
            line.contains("\"stage_started\"") && line.contains(&format!("\"stage\":\"{name}\""))
        })
        .count()
}

#[tokio::test]
async fn a_docker_daemon_killed_mid_build_is_an_environment_error_and_retry_finishes_the_run() {
    let Some((env, _docker)) = parts("daemon killed mid-build").await else {
        return;
    };
    let started = Instant::now();
    let mut daemon = PrivateDaemon::start();
    let load = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{cli} save {image} | /usr/bin/docker --host {host} load",
            cli = env.docker_cli(),
            image = env.base_image(),
            host = daemon.host()
        ))
        .output()
        .unwrap();
    assert!(load.status.success(), "loading the base image: {load:?}");
    eprintln!("private daemon up in {:?}", started.elapsed());

    let marker = unique("drill");
    let (_app, url, sha) = slow_app(env, &marker);
    let image = format!("e2e/{}", unique("daemon-killed"));
    let project = project_with(&url, env.registry(), &image, "", "");
    let stderr_path = project.path().join("run.stderr");
    let mut run = runner(env, project.path())
        .env("DOCKER_HOST", daemon.host())
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "push"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();

    // The slow step runs inside the private daemon: kill it there.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if step_under(daemon.pid(), &marker).is_some() {
            break;
        }
        if let Some(status) = run.try_wait().unwrap() {
            panic!(
                "the run ended ({status}) before the slow step started:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the slow step never started:\n{}\n--- dockerd\n{}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let killed_at = Instant::now();
    let killed = daemon.kill();
    eprintln!("killed {killed} processes of the private daemon");

    let exit_deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > exit_deadline {
            let _ = run.kill();
            let _ = run.wait();
            panic!(
                "the run did not end within 60 s of the daemon's death:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let kill_to_exit = killed_at.elapsed();
    eprintln!("the run ended {kill_to_exit:?} after the kill");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut run.stdout.take().unwrap(), &mut stdout).unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    let all = format!(
        "exit {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        status.code()
    );
    assert_eq!(status.code(), Some(6), "{all}");
    assert!(
        !stderr.contains("DONE [2/2] RUN"),
        "the step was killed before it finished: {all}"
    );
    let error = stderr
        .find("error: stage `build` failed: ")
        .map(|start| stderr[start..].trim_end())
        .unwrap_or_else(|| panic!("no final error: {all}"));
    assert!(
        error.contains("Docker daemon") && error.contains(&daemon.host()),
        "the error names the daemon: {all}"
    );
    let run_id = stdout
        .split_whitespace()
        .skip_while(|word| *word != "run")
        .nth(1)
        .unwrap_or_else(|| panic!("no run id: {all}"))
        .to_owned();
    let record = status_json(env, project.path(), &run_id);
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(stage(&record, "build")["status"], "failed", "{record}");
    assert_eq!(stage(&record, "push")["status"], "skipped", "{record}");

    // The daemon comes back on the same data root. A failed run is not resumed but retried.
    daemon.launch();
    let resumed = runner(env, project.path())
        .env("DOCKER_HOST", daemon.host())
        .args(["resume", &run_id])
        .output()
        .unwrap();
    assert_eq!(resumed.status.code(), Some(1), "{}", text(&resumed));
    assert!(
        String::from_utf8_lossy(&resumed.stderr).contains(&format!(
            "`envelope-runner retry {run_id}` runs the failed stage again"
        )),
        "{}",
        text(&resumed)
    );
    let retried = runner(env, project.path())
        .env("DOCKER_HOST", daemon.host())
        .args(["retry", &run_id])
        .output()
        .unwrap();
    assert_eq!(retried.status.code(), Some(0), "{}", text(&retried));

    let record = status_json(env, project.path(), &run_id);
    assert_eq!(record["status"], "succeeded", "{record}");
    let digest = stage(&record, "push")["outputs"]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no digest: {record}"))
        .to_owned();
    for tag in ["v1.0.0", &sha[..7], "latest"] {
        let (code, registry_digest) = head_manifest(env.registry(), &image, tag).await;
        assert_eq!(code, 200, "tag {tag}");
        assert_eq!(
            registry_digest.as_deref(),
            Some(digest.as_str()),
            "tag {tag}"
        );
    }
    assert_eq!(
        stage_starts(env, project.path(), &run_id, "build"),
        2,
        "the killed build, then the build on retry"
    );
    assert_eq!(
        stage_starts(env, project.path(), &run_id, "push"),
        1,
        "pushed once"
    );
    eprintln!("drill done in {:?}", started.elapsed());

    let dir = daemon.dir.clone();
    drop(daemon);
    assert!(mounts_under(&dir).is_empty(), "mounts left under {dir:?}");
    assert!(
        processes_naming(&dir).is_empty(),
        "processes left naming {dir:?}"
    );
    assert!(!dir.exists(), "{dir:?} was not removed");
}
