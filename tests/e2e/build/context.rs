//! The build context sent to the daemon: a rebuild after a one-file change sends only that
//! file, and thousands of small files behind a large one arrive whole.

use std::process::Command;

use envelope_runner::exec::build::BuildProgress;

use super::{context, request, run_build, save, text};
use crate::support::docker::RemoveImages;
use envelope_tests::env::{parts, unique};

/// The most bytes a build's "load build context" step reported transferring.
fn context_bytes_sent(events: &[BuildProgress]) -> u64 {
    events
        .iter()
        .filter_map(|event| match event {
            BuildProgress::Status {
                step,
                name,
                current,
                ..
            } if step == "[internal] load build context" && name.starts_with("transferring") => {
                Some(*current)
            }
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_rebuild_after_a_one_file_change_sends_only_that_file() {
    let Some((env, docker)) = parts("build incremental context").await else {
        return;
    };
    let dockerfile = format!("FROM {}\nCOPY . /ctx\n", env.base_image());
    // Two MiB that do not change between the builds.
    let big: String = (0..32 * 1024).map(|line| format!("{line:063}\n")).collect();
    let dir = context(&[
        ("Dockerfile", &dockerfile),
        ("big.txt", &big),
        ("small.txt", "one\n"),
    ]);
    let tag = format!("{}:latest", unique("envelope-e2e/incremental"));
    let _cleanup = RemoveImages {
        docker_cli: env.docker_cli().to_owned(),
        references: vec![tag.clone()],
    };
    let mut request = request(dir.path());
    request.tags = vec![tag.clone()];
    let (first, first_events) = run_build(&docker, &request).await;
    first.expect("the first build");
    let first_sent = context_bytes_sent(&first_events);
    assert!(
        first_sent >= big.len() as u64,
        "the first build sends the whole context, reported {first_sent} bytes"
    );

    std::fs::write(dir.path().join("small.txt"), "two\n").expect("edit");
    let (second, second_events) = run_build(&docker, &request).await;
    second.expect("the second build");
    let second_sent = context_bytes_sent(&second_events);
    assert!(
        second_sent < 64 * 1024,
        "only the changed file travels again, reported {second_sent} bytes"
    );
    let image = save(&docker, &tag).await;
    assert_eq!(text(&image, "ctx/small.txt"), "two\n");
    assert_eq!(
        text(&image, "ctx/big.txt"),
        big,
        "the unchanged file is whole"
    );
}

#[tokio::test]
async fn a_context_of_thousands_of_files_behind_a_large_one_is_sent_whole() {
    let Some((env, docker)) = parts("build large context").await else {
        return;
    };
    // While the large file goes out, the daemon asks for thousands of small ones: each request
    // is a tiny HTTP/2 frame, and the session must keep reading them.
    let dockerfile = format!(
        "FROM {}\nCOPY . /ctx\nRUN ls /ctx/files | wc -l > /count && md5sum /ctx/a-large.bin > /large.md5\n",
        env.base_image()
    );
    let dir = context(&[("Dockerfile", &dockerfile)]);
    let large: Vec<u8> = (0..16 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(dir.path().join("a-large.bin"), &large).expect("write");
    std::fs::create_dir(dir.path().join("files")).expect("mkdir");
    for index in 0..4000 {
        std::fs::write(
            dir.path().join(format!("files/{index:04}.txt")),
            format!("file {index}\n"),
        )
        .expect("write");
    }
    let tag = format!("{}:latest", unique("envelope-e2e/large-context"));
    let _cleanup = RemoveImages {
        docker_cli: env.docker_cli().to_owned(),
        references: vec![tag.clone()],
    };
    let mut request = request(dir.path());
    request.tags = vec![tag.clone()];
    let (result, _events) = run_build(&docker, &request).await;
    result.expect("the build gets the whole context");
    let image = save(&docker, &tag).await;
    assert_eq!(text(&image, "count").trim(), "4000");
    let md5 = Command::new("md5sum")
        .arg(dir.path().join("a-large.bin"))
        .output()
        .expect("md5sum");
    let expected = String::from_utf8_lossy(&md5.stdout);
    let expected = expected.split_whitespace().next().expect("a sum");
    assert!(
        text(&image, "large.md5").starts_with(expected),
        "{}",
        text(&image, "large.md5")
    );
}
