//! The plan as plain text for people: the `plan` command's text output.

use super::{CheckTarget, Plan, Step};
use crate::pipeline::model::OnFailure;
use crate::pipeline::untrusted;

impl Plan {
    /// A plain-text rendering for people.
    pub fn render_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        match &self.environment {
            Some(environment) => writeln!(
                out,
                "pipeline {} in environment {environment} ({})",
                self.pipeline, self.file
            ),
            None => writeln!(out, "pipeline {} ({})", self.pipeline, self.file),
        }
        .expect("writing to a String cannot fail");
        let _ = writeln!(
            out,
            "trigger  ref {}  sha {}{}",
            self.trigger.git_ref,
            self.trigger
                .sha
                .as_deref()
                .unwrap_or("<resolved at run time>"),
            self.trigger
                .tag
                .as_ref()
                .map(|tag| if self.trigger.local_stand_in {
                    format!("  release {tag} (local stand-in, not a release)")
                } else {
                    format!("  release {tag}")
                })
                .unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "aws      region {}  registry {}",
            self.aws.region.as_deref().unwrap_or("-"),
            self.aws.registry
        );
        for (index, step) in self.steps.iter().enumerate() {
            let _ = writeln!(out, "\n{}. {} ({})", index + 1, step.name(), step.kind());
            match step {
                Step::Source(s) => {
                    let _ = writeln!(out, "   clone     {} at {}", s.url, s.reference);
                    // Only HTTP(S) remotes are fetched with the token (file:// and local
                    // paths never see it).
                    if s.url.starts_with("https://") || s.url.starts_with("http://") {
                        let _ = writeln!(out, "   token     ${}", s.token_env);
                    }
                }
                Step::Build(b) => {
                    let _ = writeln!(out, "   image     {}", b.repository);
                    let _ = writeln!(
                        out,
                        "   context   {}  dockerfile {}",
                        b.context, b.dockerfile
                    );
                    if let Some(target) = &b.target {
                        let _ = writeln!(out, "   target    {target}");
                    }
                    if let Some(platform) = &b.platform {
                        let _ = writeln!(out, "   platform  {platform}");
                    }
                    for (key, value) in &b.build_args {
                        let _ = writeln!(out, "   arg       {key}={value}");
                    }
                    for secret in &b.secrets {
                        let _ = writeln!(out, "   secret    {} from {}", secret.id, secret.from);
                    }
                    for cache in &b.cache_from {
                        let _ = writeln!(out, "   cache     {cache}");
                    }
                    if let Some(spec) = &b.buildspec {
                        let _ = writeln!(
                            out,
                            "   buildspec {} (phases: {})",
                            spec.path,
                            spec.phases.join(", ")
                        );
                    }
                    let _ = writeln!(out, "   timeout   {}  idle {}", b.timeout, b.idle_timeout);
                }
                Step::Push(p) => {
                    for tag in &p.tags {
                        let _ = writeln!(out, "   tag       {}:{tag}", p.repository);
                    }
                    let _ = writeln!(out, "   deploys   {}", p.image);
                }
                Step::Approval(a) => {
                    let _ = writeln!(out, "   timeout   {}", a.timeout);
                    if let Some(sns) = &a.notify_sns {
                        let _ = writeln!(out, "   notify    {sns}");
                    }
                    if let Some(webhook) = &a.notify_webhook {
                        let origin = crate::redact::url_origin(webhook);
                        let _ = writeln!(out, "   notify    {origin} (webhook)");
                    }
                }
                Step::Migrate(m) => {
                    let _ = writeln!(
                        out,
                        "   task      {} (service {}) in {}",
                        m.container, m.service, m.cluster
                    );
                    let _ = writeln!(out, "   command   {}", untrusted::command_line(&m.command));
                    for image in &m.images {
                        let _ = writeln!(out, "   image     {image}");
                    }
                    let _ = writeln!(out, "   timeout   {}", m.timeout);
                }
                Step::Deploy(d) => {
                    let _ = writeln!(out, "   cluster   {}", d.cluster);
                    for service in &d.services {
                        let _ = writeln!(out, "   service   {service}");
                    }
                    for image in &d.images {
                        let _ = writeln!(out, "   image     {image}");
                    }
                    let _ = writeln!(
                        out,
                        "   timeout   {}  on failure {}",
                        d.timeout,
                        match d.on_failure {
                            OnFailure::Rollback => "roll back every service",
                            OnFailure::Stop => "stop",
                        }
                    );
                    for check in &d.verify {
                        let body = check
                            .body_contains
                            .as_ref()
                            .map(|text| format!(" containing {text:?}"))
                            .unwrap_or_default();
                        let wanted = match (&check.target, check.status) {
                            (CheckTarget::TargetGroup(target_group), _) => format!(
                                "every new task of {} healthy in its target groups within {}",
                                target_group.service, check.timeout
                            ),
                            (CheckTarget::Alarm(alarm), _) => {
                                format!("alarm {} never in ALARM for {}", alarm.name, check.timeout)
                            }
                            (_, status) => format!(
                                "{} answers {}{body} within {}",
                                check.target_text(),
                                status.unwrap_or(crate::pipeline::verify::DEFAULT_STATUS),
                                check.timeout
                            ),
                        };
                        let _ = writeln!(out, "   verify    {wanted}");
                    }
                }
            }
        }
        if let Some(notify) = &self.notify {
            let on: Vec<&str> = notify.on.iter().map(|ending| ending.as_str()).collect();
            let mut to = Vec::new();
            to.extend(notify.sns.iter().cloned());
            for (url, env, kind) in [
                (&notify.slack, &notify.slack_env, "slack"),
                (&notify.webhook, &notify.webhook_env, "webhook"),
            ] {
                if let Some(url) = url {
                    to.push(format!("{} ({kind})", crate::redact::url_origin(url)));
                }
                if let Some(env) = env {
                    to.push(format!("${env} ({kind})"));
                }
            }
            let _ = writeln!(out, "\nnotify    on {}: {}", on.join(", "), to.join(", "));
        }
        if !self.left_out.is_empty() {
            let _ = writeln!(
                out,
                "\nleft out  {}: `{}` is not a release, so this run builds and pushes only; \
                 deploy by publishing a release tag",
                self.left_out.join(", "),
                self.trigger.git_ref
            );
        }
        out
    }
}
