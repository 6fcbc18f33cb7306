//! The `docker` command line against the test daemon: removing what a fixture started or
//! built, and the addresses of running containers.

use std::collections::BTreeSet;
use std::process::Command;

/// The addresses (on any of their networks) of the running containers the daemon lists, all
/// of them or those matching a `docker ps --filter` value.
pub fn container_addresses(docker_cli: &str, filter: Option<&str>) -> BTreeSet<String> {
    let mut list = Command::new(docker_cli);
    list.args(["ps", "-q"]);
    if let Some(filter) = filter {
        list.args(["--filter", filter]);
    }
    let listed = list.output().unwrap();
    let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if ids.is_empty() {
        return BTreeSet::new();
    }
    let inspected = Command::new(docker_cli)
        .args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        ])
        .args(&ids)
        .output()
        .unwrap();
    String::from_utf8_lossy(&inspected.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Removes (forcibly) every container the daemon lists for a `docker ps --filter` value, e.g.
/// `label=KEY=VALUE`: what a fixture started and must not leave running.
pub fn remove_containers(docker_cli: &str, filter: &str) {
    let Ok(listed) = Command::new(docker_cli)
        .args(["ps", "-aq", "--filter", filter])
        .output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if !ids.is_empty() {
        let _ = Command::new(docker_cli)
            .args(["rm", "-f"])
            .args(&ids)
            .output();
    }
}

/// Removes (forcibly) the images `references` names (ids or tags), ignoring those already gone.
pub fn remove_images(docker_cli: &str, references: &[String]) {
    if !references.is_empty() {
        let _ = Command::new(docker_cli)
            .args(["image", "rm", "-f"])
            .args(references)
            .output();
    }
}

/// Removes its images when dropped, however the test ends.
pub struct RemoveImages {
    pub docker_cli: String,
    pub references: Vec<String>,
}

impl Drop for RemoveImages {
    fn drop(&mut self) {
        remove_images(&self.docker_cli, &self.references);
    }
}

/// Removes the container `name` when dropped, however the test ends.
pub struct RemoveContainer {
    pub docker_cli: String,
    pub name: String,
}

impl Drop for RemoveContainer {
    fn drop(&mut self) {
        let _ = Command::new(&self.docker_cli)
            .args(["rm", "-f", &self.name])
            .output();
    }
}
