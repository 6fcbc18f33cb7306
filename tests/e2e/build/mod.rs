//! build end-to-end tests: real BuildKit builds on the Docker daemon, through
//! `envelope_runner::exec::build::build`, checked by reading the images back from the daemon
//! (inspect, history, and every layer of `docker save`) and by pushing to the test registries:
//! what an image holds (`image`), errors a user can act on (`errors`), the cache from a
//! registry (`cache`) and the build context sent (`context`).
//!
//! Tests that need Docker skip (with a note on stderr) only when ENVELOPE_TEST_REQUIRE_DOCKER is
//! unset and Docker cannot be reached; CI sets it, so there they run for real.

mod cache;
mod context;
mod errors;
pub(crate) mod image;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bollard::Docker;
use envelope_runner::exec::build::{BuildError, BuildOutput, BuildProgress, BuildRequest, build};
use futures_util::StreamExt;

/// A build context in a temporary directory.
fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, contents) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, contents).expect("write");
    }
    dir
}

/// A build of the Dockerfile at the root of `dir`.
fn request(dir: &Path) -> BuildRequest {
    BuildRequest {
        context_dir: dir.to_owned(),
        dockerfile: PathBuf::from("Dockerfile"),
        ..BuildRequest::default()
    }
}

/// Runs a build, collecting its progress events. The build must finish within five minutes.
async fn run_build(
    docker: &Docker,
    request: &BuildRequest,
) -> (Result<BuildOutput, BuildError>, Vec<BuildProgress>) {
    let events = Mutex::new(Vec::new());
    let record = |event: BuildProgress| events.lock().expect("lock").push(event);
    let result = tokio::time::timeout(Duration::from_secs(300), build(docker, request, &record))
        .await
        .expect("the build finishes within five minutes");
    (result, events.into_inner().expect("lock"))
}

/// An image as `docker save` writes it.
struct SavedImage {
    /// The whole archive: manifest, config (with the history), every layer.
    raw: Vec<u8>,
    /// The image's file system: path (no leading `/`) to contents, layers applied in order.
    files: BTreeMap<String, Vec<u8>>,
}

async fn save(docker: &Docker, image: &str) -> SavedImage {
    let mut raw = Vec::new();
    let mut stream = docker.export_image(image);
    while let Some(chunk) = stream.next().await {
        raw.extend_from_slice(&chunk.expect("export chunk"));
    }
    let mut members: HashMap<String, Vec<u8>> = HashMap::new();
    let mut archive = tar::Archive::new(raw.as_slice());
    for entry in archive.entries().expect("saved image is a tar") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read member");
        members.insert(path, bytes);
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&members["manifest.json"]).expect("manifest.json");
    let mut files = BTreeMap::new();
    for layer in manifest[0]["Layers"].as_array().expect("layers") {
        let layer = layer.as_str().expect("layer path");
        let mut archive = tar::Archive::new(members[layer].as_slice());
        for entry in archive.entries().expect("layer is a tar") {
            let mut entry = entry.expect("layer entry");
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            let name = path.rsplit('/').next().unwrap_or_default();
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let parent = path.strip_suffix(name).unwrap_or_default();
                files.remove(&format!("{parent}{hidden}"));
                continue;
            }
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read file");
            files.insert(path.trim_end_matches('/').to_owned(), bytes);
        }
    }
    SavedImage { raw, files }
}

/// The file at `path` (no leading `/`) of a saved image, as text.
fn text(image: &SavedImage, path: &str) -> String {
    let bytes = image
        .files
        .get(path)
        .unwrap_or_else(|| panic!("the image has no {path}"));
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
