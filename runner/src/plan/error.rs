//! Why a plan cannot be made for a trigger.

use crate::pipeline::untrusted;

/// A plan that cannot be made for this trigger.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "stage `{stage}` uses `${{release.tag}}` but `{git_ref}` is not a release tag{patterns}; \
         run with --ref set to a tag"
    )]
    NoReleaseTag {
        stage: String,
        git_ref: String,
        patterns: String,
    },
    #[error("`{0}` is not a 40-character hexadecimal commit sha")]
    BadSha(String),
    #[error(
        "stage `{stage}` reads `${{env.{variable}}}` but {variable} is not set; export it, or with `run --local` give it in an `--env-file`"
    )]
    MissingEnv { stage: String, variable: String },
    #[error(transparent)]
    Unsafe(#[from] untrusted::UnsafeValue),
    #[error("image tag `{tag}` of stage `{stage}` is not valid after substitution: {problem}")]
    BadTag {
        stage: String,
        tag: String,
        problem: String,
    },
    #[error(
        "a verify check of stage `{stage}` is not valid after substitution: {problem}; fix the \
         value of the variable it uses"
    )]
    BadVerifyCheck { stage: String, problem: String },
}
