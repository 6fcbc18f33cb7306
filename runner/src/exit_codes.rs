//! Documented process exit codes. README.md lists them; keep the two in step.

/// Everything asked for succeeded.
pub const OK: i32 = 0;
/// A stage failed (build, push, migration, deploy); the run record says which and why.
pub const STAGE_FAILED: i32 = 1;
/// `diff --exit-code`: a deploy would change at least one service.
pub const CHANGES: i32 = 1;
/// Invalid input: a pipeline or buildspec file, a command-line argument, a missing file.
pub const INVALID_INPUT: i32 = 2;
/// An approval was rejected or timed out; nothing after the gate ran.
pub const APPROVAL_DENIED: i32 = 3;
/// The run is paused and waiting (for example `--until approval`); resume it later.
pub const WAITING: i32 = 4;
/// Another run holds the pipeline's lock, this run lost it (and stopped before its next AWS
/// change), or this run was superseded by a newer one.
pub const LOCKED_OR_SUPERSEDED: i32 = 5;
/// The environment is not usable: Docker daemon, registry, AWS or git unreachable, bad credentials.
pub const ENVIRONMENT: i32 = 6;
/// The state store is corrupt or from a newer version of envelope-runner.
pub const STORE: i32 = 7;
/// `promote` refused the run to promote: it did not succeed, deployed nothing, or its deploy
/// ran no `verify:` checks (see `promote --allow-unverified`); or there is no such run.
pub const PROMOTION_REFUSED: i32 = 8;
/// Cancelled by Ctrl-C or SIGTERM after a clean checkpoint.
pub const CANCELLED: i32 = 130;
