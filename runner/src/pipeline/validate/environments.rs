//! Checks on `environments:`: environment names, and that what an environment overrides
//! exists in the stages (a service it renames must be one a migrate or deploy stage names).

use super::{Checker, check_aws_at, check_not_blank, key};
use crate::pipeline::diagnostic::{quoted_list, suggest};
use crate::pipeline::model::{Pipeline, Stage};
use crate::pipeline::names;
use std::collections::BTreeSet;

pub(super) fn check(checker: &mut Checker, pipeline: &Pipeline) {
    let services: BTreeSet<&str> = pipeline
        .stages
        .iter()
        .flat_map(|stage| match stage {
            Stage::Migrate(migrate) => vec![migrate.service.as_str()],
            Stage::Deploy(deploy) => deploy.services.iter().map(String::as_str).collect(),
            Stage::Build(_) | Stage::Approval(_) => Vec::new(),
        })
        .collect();
    for (name, environment) in &pipeline.environments {
        let at = [key("environments"), key(name)];
        if !names::is_stage_name(name) {
            let position = checker.key_position(&at);
            checker
                .error(
                    position,
                    format!("`{name}` is not a valid environment name"),
                )
                .help =
                Some("use lowercase letters, digits and `-`, starting with a letter".into());
        }
        if let Some(cluster) = &environment.cluster {
            check_not_blank(
                checker,
                cluster,
                &[&at[..], &[key("cluster")]].concat(),
                "cluster",
            );
        }
        for (written, replacement) in &environment.services {
            let path = [&at[..], &[key("services"), key(written)]].concat();
            if !services.contains(written.as_str()) {
                let position = checker.key_position(&path);
                let help = match suggest(written, services.iter().copied()) {
                    Some(candidate) => format!("did you mean `{candidate}`?"),
                    None if services.is_empty() => {
                        "the pipeline has no migrate or deploy stage to rename services in".into()
                    }
                    None => format!(
                        "the keys are service names as the stages write them: {}",
                        quoted_list(services.iter().copied())
                    ),
                };
                let diagnostic = checker.error(
                    position,
                    format!("environment `{name}` renames `{written}`, which no stage deploys or migrates with"),
                );
                diagnostic.label = Some("not a service of any stage".into());
                diagnostic.help = Some(help);
            }
            check_not_blank(checker, replacement, &path, "service");
        }
        if let Some(aws) = &environment.aws {
            check_aws_at(checker, aws, &[&at[..], &[key("aws")]].concat());
        }
    }
}
