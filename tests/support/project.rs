//! A project folder whose `pipelines/hello.yaml` builds the example app and pushes it to a
//! test registry, then runs the stages a test gives it.

/// The stages after the build that `project` gives a pipeline.
pub const APPROVAL_AND_DEPLOY: &str = r#"  - approval:
      timeout: 1h
  - deploy:
      cluster: envelope-example
      services: [hello-web]
"#;

/// A project folder with `pipelines/hello.yaml` pointing at `url` and pushing `image` to the
/// test registry, then an approval and a deploy.
pub fn project(url: &str, registry: &str, image: &str) -> tempfile::TempDir {
    project_with(url, registry, image, "", APPROVAL_AND_DEPLOY)
}

/// A project whose pipeline has `top` (extra top-level keys) and `stages` after the build.
pub fn project_with(
    url: &str,
    registry: &str,
    image: &str,
    top: &str,
    stages: &str,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    std::fs::write(
        dir.path().join("pipelines/hello.yaml"),
        format!(
            r#"source:
  repository: {url}
  tags: ["v*"]
aws:
  region: eu-west-2
  registry: {registry}
{top}stages:
  - build:
      image: {image}
      build_args:
        APP_VERSION: ${{release.tag}}
      tags: ["${{release.tag}}", "${{git.short_sha}}", latest]
{stages}"#
        ),
    )
    .unwrap();
    dir
}
