//! Every broken pipeline under fixtures/invalid fails with located, actionable errors, and so
//! does a broken project defaults file; the rendered text is snapshot-tested so wording changes
//! are reviewed.

use envelope_runner::pipeline::{self, diagnostic::SourceFile};
use std::path::Path;

/// Load a fixture relative to the fixtures folder so rendered paths are stable.
fn render_errors(name: &str) -> String {
    let folder = crate::fixtures().join("invalid");
    let path = folder.join(name);
    let mut sources = pipeline::read_sources(&path).expect("fixture is readable");
    // Show paths relative to the fixture folder in snapshots.
    sources.pipeline.path = Path::new(name).to_path_buf();
    for source in sources.buildspecs.values_mut().flatten() {
        source.path = source
            .path
            .strip_prefix(&folder)
            .unwrap_or(&source.path)
            .to_path_buf();
    }
    sources.project_root = ".".into();
    match pipeline::compile(&sources) {
        Ok(_) => panic!("{name} should not validate"),
        Err(diagnostics) => diagnostics.render(false),
    }
}

macro_rules! invalid_fixture {
    ($($test:ident => $file:literal, $expect:literal;)*) => {
        $(
            #[test]
            fn $test() {
                let rendered = render_errors($file);
                assert!(
                    rendered.contains($expect),
                    "expected `{}` in:\n{rendered}",
                    $expect
                );
                let located = regex::Regex::new(r"\.ya?ml:\d+:\d+").unwrap();
                assert!(located.is_match(&rendered), "no file:line:col in:\n{rendered}");
                insta::assert_snapshot!(stringify!($test), rendered);
            }
        )*

        /// Every fixture file has a test above.
        #[test]
        fn every_fixture_is_covered() {
            let covered = [$($file),*];
            let mut files: Vec<String> = std::fs::read_dir(crate::fixtures().join("invalid"))
                .unwrap()
                .flatten()
                .filter(|entry| entry.path().is_file())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            for file in &files {
                assert!(covered.contains(&file.as_str()), "fixture {file} has no test");
            }
            assert!(files.len() >= 15, "at least 15 broken fixtures, found {}", files.len());
        }
    };
}

invalid_fixture! {
    syntax_error => "syntax-error.yaml", "invalid YAML";
    wrong_type => "wrong-type.yaml", "`stages[1].deploy.services` must be a list of strings";
    unknown_key_with_suggestion => "unknown-key.yaml", "did you mean `image`?";
    unknown_variable => "unknown-variable.yaml", "unknown variable `${git.shaa}`";
    stage_order => "stage-order.yaml", "stage `deploy` comes before any build stage";
    bad_duration => "bad-duration.yaml", "bad duration for `timeout`";
    bad_image_tag => "bad-image-tag.yaml", "is not a valid image tag";
    empty_service_list => "empty-services.yaml", "empty service list";
    duplicate_stage => "duplicate-stage.yaml", "duplicate stage `approval`";
    unknown_stage_kind => "unknown-stage-kind.yaml", "did you mean `build`?";
    missing_required_key => "missing-required.yaml", "missing key `container`";
    build_output_before_build => "digest-before-build.yaml", "uses `${build.digest}` but no build stage comes before it";
    undeclared_environment_variable => "undeclared-env.yaml", "environment variable `DEPLOY_NOTE` is not declared";
    secret_looking_environment_variable => "secret-env.yaml", "`DB_PASSWORD` looks like a secret";
    bad_enum_value => "bad-enum.yaml", "did you mean `rollback`?";
    missing_buildspec => "missing-buildspec.yaml", "no buildspec at `buildspecs/nope.yml`";
    unsupported_buildspec_section => "unsupported-buildspec.yaml", "buildspec section `artifacts` is not supported yet";
    structure_and_meaning => "structure-and-meaning.yaml", "unknown stage kind `biuld`";
    many_errors_at_once => "many-errors.yaml", "is not an SNS topic ARN";
    unclosed_variable => "unclosed-variable.yaml", "is never closed";
    duplicate_key => "duplicate-key.yaml", "duplicate mapping key `image`";
    not_a_mapping => "not-a-mapping.yaml", "must be a mapping";
    wrong_scalar_type => "wrong-scalar-type.yaml", "must be true or false";
    no_stages => "no-stages.yaml", "the pipeline has no stages";
    run_notify => "run-notify.yaml", "write `slack_env: <VARIABLE>` instead";
    bad_verify_check => "bad-verify.yaml", "a check must use http:// or https://";
    bad_verify_status => "bad-verify-status.yaml", "`700` is not an HTTP status";
    bad_verify_task => "bad-verify-task.yaml", "`envelope-prod-apii` is not a service of this deploy stage";
    bad_verify_target_group => "bad-verify-target-group.yaml", "`status` does not apply to a `target_group` check";
    bad_verify_alarm => "bad-verify-alarm.yaml", "`timeout` does not apply to an `alarm` check";
    environments => "environments.yaml", "renames `envelope-prod-apii`, which no stage deploys or migrates with";
    environment_keys => "environment-keys.yaml", "unknown key `clustr` in `environments.prod`";
}

#[test]
fn many_errors_are_all_reported() {
    let rendered = render_errors("many-errors.yaml");
    for expected in [
        "`API` is not a valid pipeline name",
        "is an SSH URL",
        "`1234` is not an AWS account id",
        "`Envelope_API` is not a valid image repository name",
        "unknown variable `${release.tga}`",
        "secret `composer` needs exactly one source",
        "bad duration for `timeout`",
        "service `envelope-prod-api` is listed twice",
    ] {
        assert!(
            rendered.contains(expected),
            "missing `{expected}` in:\n{rendered}"
        );
    }
}

/// Structural errors do not hide meaning errors: the stages that can be read are judged
/// (stage order included, the misspelt build counting as a build) in the same pass.
#[test]
fn structural_and_meaning_errors_come_in_one_pass() {
    let rendered = render_errors("structure-and-meaning.yaml");
    for expected in [
        "unknown key `descripton`",
        "unknown stage kind `biuld`",
        "unknown key `comand`",
        "must be a mapping",
        "stage `deploy` comes before any build stage",
        "bad duration for `timeout`: `half an hour`",
        "unknown variable `${git.shaa}`",
        "bad duration for `timeout`: `soon`",
        "8 errors found",
    ] {
        assert!(
            rendered.contains(expected),
            "missing `{expected}` in:\n{rendered}"
        );
    }
}

/// The project defaults file goes through the pipeline file's front end: its errors are
/// located in it, come with the pipeline's, and say what to do.
#[test]
fn defaults_file_errors() {
    const PIPELINE: &str = "source:\n  repository: acme/app\n  tags: [\"v*\"]\n\
                            stages:\n  - build:\n      image: app\n";
    let render = |defaults: &str| {
        let sources = pipeline::Sources {
            pipeline: SourceFile::new("pipelines/app.yaml", PIPELINE),
            defaults: Some(SourceFile::new("envelope.yaml", defaults)),
            buildspecs: Default::default(),
            project_root: ".".into(),
        };
        match pipeline::compile(&sources) {
            Ok(_) => panic!("{defaults:?} should not validate"),
            Err(diagnostics) => diagnostics.render(false),
        }
    };
    let rendered = [
        "aws:\n  regoin: eu-west-2\n",
        "- aws:\n    region: eu-west-2\n",
        "aws: {region: eu-west-2\n",
    ]
    .map(render)
    .join("\n");
    insta::assert_snapshot!("defaults_file_errors", rendered);
}
