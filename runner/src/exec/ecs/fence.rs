//! The check every ECS change of a run passes first: RegisterTaskDefinition, RunTask and
//! UpdateService (a rollback's too) go out only while the run still holds its pipeline's deploy
//! lease, confirmed in the store right before the call (see `exec::lease`). A run that lost the
//! lease stops before the change with [`EcsError::LeaseLost`] and changes nothing more.

use super::EcsError;

/// Confirms that the caller may still change AWS for its pipeline.
#[async_trait::async_trait]
pub trait Fence: Send + Sync {
    /// `Ok` when the change may go out now; otherwise why not (for people).
    async fn confirm(&self, change: &str) -> Result<(), String>;
}

/// Passes `change` through `fence` when there is one.
pub(crate) async fn check(fence: Option<&dyn Fence>, change: String) -> Result<(), EcsError> {
    let Some(fence) = fence else {
        return Ok(());
    };
    fence
        .confirm(&change)
        .await
        .map_err(|reason| EcsError::LeaseLost { change, reason })
}
