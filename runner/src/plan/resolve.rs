//! What `plan()` resolves for each stage: the trigger read from the git ref, template text
//! rendered with the run's values, timeouts with their defaults, and clickable source URLs.

use super::{PlanContext, PlanError, Trigger};
use crate::pipeline::{CompiledPipeline, duration, template};
use std::collections::BTreeMap;
use std::time::Duration;

pub(super) fn timeout_of(text: Option<&str>, default: Duration) -> Duration {
    text.and_then(|text| duration::parse(text).ok())
        .unwrap_or(default)
}

/// The URL without credentials, for labels people can click.
pub(super) fn public_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host))
                if !rest.split('/').next().unwrap_or("").is_empty()
                    && rest.find('@') < rest.find('/') =>
            {
                format!("{scheme}://{host}")
            }
            _ => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

pub(super) fn trigger_of(compiled: &CompiledPipeline, context: &PlanContext) -> Trigger {
    let git_ref = context.git_ref.clone();
    let source = &compiled.pipeline.source;
    let matches_tag_pattern = |name: &str| {
        source.tags.iter().any(|pattern| {
            globset::Glob::new(pattern)
                .map(|glob| glob.compile_matcher().is_match(name))
                .unwrap_or(false)
        })
    };
    let (tag, branch) = if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
        (Some(tag.to_owned()), None)
    } else if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
        (None, Some(branch.to_owned()))
    } else if git_ref.len() == 40 && git_ref.chars().all(|c| c.is_ascii_hexdigit()) {
        (None, None)
    } else if matches_tag_pattern(&git_ref) {
        (Some(git_ref.clone()), None)
    } else {
        (None, Some(git_ref.clone()))
    };
    let sha = context.sha.clone().or_else(|| {
        (git_ref.len() == 40 && git_ref.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| git_ref.clone())
    });
    // A `--local` run of no release tags its images with the stand-in instead.
    let (tag, local_stand_in) = match (tag, &context.local_tag) {
        (None, Some(stand_in)) => (Some(stand_in.clone()), true),
        (tag, _) => (tag, false),
    };
    Trigger {
        short_sha: sha.as_ref().map(|sha| sha[..7].to_owned()),
        sha,
        tag,
        branch,
        git_ref,
        local_stand_in,
    }
}

pub(super) fn render_text(
    text: &str,
    stage: &str,
    values: &BTreeMap<String, String>,
    trigger: &Trigger,
    compiled: &CompiledPipeline,
    builds: &[String],
) -> Result<String, PlanError> {
    let parts =
        template::parse(text).unwrap_or_else(|_| vec![template::Part::Literal(text.into())]);
    for part in &parts {
        if let template::Part::Variable { name, .. } = part {
            if name == "release.tag" && trigger.tag.is_none() {
                let patterns = &compiled.pipeline.source.tags;
                return Err(PlanError::NoReleaseTag {
                    stage: stage.to_owned(),
                    git_ref: trigger.git_ref.clone(),
                    patterns: if patterns.is_empty() {
                        String::new()
                    } else {
                        format!(" (tag patterns: {})", patterns.join(", "))
                    },
                });
            }
            if let Some(variable) = name.strip_prefix("env.")
                && !values.contains_key(name)
            {
                return Err(PlanError::MissingEnv {
                    stage: stage.to_owned(),
                    variable: variable.to_owned(),
                });
            }
        }
    }
    let single_build = builds.len() == 1;
    Ok(template::render(&parts, &|name| {
        values.get(name).cloned().or_else(|| {
            // `${build.digest}` names the only build stage whatever its name.
            let (stage_name, output) = name.rsplit_once('.')?;
            let stage_name = if stage_name == "build" && single_build {
                builds[0].as_str()
            } else {
                stage_name
            };
            let name = format!("{stage_name}.{output}");
            Some(values.get(&name).cloned().unwrap_or(format!("<{name}>")))
        })
    }))
}

#[cfg(test)]
mod tests {
    use crate::pipeline::compile_text;
    use crate::plan::{PlanContext, PlanError, Step, plan};

    const PIPELINE: &str = "source:\n  repository: acme/app\n  tags: [\"v*\"]\nstages:\n  - build:\n      image: app\n      build_args:\n        VERSION: ${release.version}\n        RELEASE: ${release.tag}\n      tags: [\"${release.tag}\", latest]\n";

    fn build_of(context: &PlanContext) -> Result<crate::plan::BuildStep, PlanError> {
        let compiled = compile_text(PIPELINE);
        let plan = plan(&compiled, context)?;
        Ok(plan
            .steps
            .into_iter()
            .find_map(|step| match step {
                Step::Build(build) => Some(*build),
                _ => None,
            })
            .expect("a build step"))
    }

    #[test]
    fn a_local_run_without_a_release_reads_the_stand_in_for_the_release_tag() {
        let local = PlanContext {
            git_ref: "HEAD".into(),
            local_tag: Some("local-0123456".into()),
            ..PlanContext::default()
        };
        let build = build_of(&local).unwrap();
        assert_eq!(build.tags, ["local-0123456", "latest"]);
        assert_eq!(build.build_args["RELEASE"], "local-0123456");
        assert_eq!(build.build_args["VERSION"], "local-0123456");
        let compiled = compile_text(PIPELINE);
        let planned = plan(&compiled, &local).unwrap();
        assert!(planned.trigger.local_stand_in);
        assert!(
            planned
                .render_text()
                .contains("release local-0123456 (local stand-in, not a release)"),
            "{}",
            planned.render_text()
        );
    }

    #[test]
    fn a_release_tag_beats_the_stand_in_and_other_runs_still_need_one() {
        let release = PlanContext {
            git_ref: "v1.2.3".into(),
            local_tag: Some("local-0123456".into()),
            ..PlanContext::default()
        };
        assert_eq!(build_of(&release).unwrap().tags, ["v1.2.3", "latest"]);
        let branch = PlanContext {
            git_ref: "main".into(),
            ..PlanContext::default()
        };
        assert!(matches!(
            build_of(&branch),
            Err(PlanError::NoReleaseTag { .. })
        ));
    }
}
