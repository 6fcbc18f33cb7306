//! The DynamoDB store's lease and superseding writes: leases with a generation (the fencing
//! token, grown by `ADD` in the same conditional `UpdateItem` that grants the lease), and
//! superseding a run only while it is before its gate (a conditional `UpdateItem` of the run
//! item on the revision that was read, so a stage transition in between makes it read again).

use std::time::Duration;

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::super::clock::{duration_millis, from_millis};
use super::super::{LeaseOutcome, LeaseState, StoreError};
use super::item::{
    LEASE_SORT_KEY, RUN_SORT_KEY, enum_name, lease_partition, number, optional_string,
    run_partition, string,
};
use super::request::RunItems;
use super::{DynamoDbStore, PARTITION_KEY};
use crate::run::{RunId, RunStatus, StageStatus};

impl DynamoDbStore {
    pub(super) async fn acquire_generation(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        const OPERATION: &str = "taking a lease";
        let partition = &lease_partition(key);
        let what = &format!("the lease `{key}`");
        let gave_up =
            || format!("the lease `{key}` kept changing hands while it was being taken; retry");
        self.retry_lost_races(OPERATION, gave_up, move || async move {
            let now = self.clock.now_millis();
            let expires = now.saturating_add(duration_millis(ttl));
            // Free, expired, or already ours; the same condition as the SQLite store's upsert.
            let written = self
                .update_item(partition, LEASE_SORT_KEY)
                .update_expression(
                    "SET #holder = :holder, #expires = :expires ADD #generation :one",
                )
                .condition_expression(
                    "attribute_not_exists(#pk) OR #expires <= :now OR #holder = :holder",
                )
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_names("#expires", "expires_at_ms")
                .expression_attribute_names("#holder", "holder")
                .expression_attribute_names("#generation", "generation")
                .expression_attribute_values(":now", number(now))
                .expression_attribute_values(":expires", number(expires))
                .expression_attribute_values(":holder", string(holder))
                .expression_attribute_values(":one", number(1))
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let returned = match written {
                Ok(output) => {
                    let item = output.attributes().cloned().unwrap_or_default();
                    let generation = self.number(&item, "generation", what)?;
                    return Ok(Some(LeaseOutcome::Granted {
                        expires_at: from_millis(expires),
                        generation: u64::try_from(generation).unwrap_or(0),
                    }));
                }
                Err(error) => match error.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                        failed.item().cloned()
                    }
                    _ => return Err(self.sdk_error(OPERATION, error)),
                },
            };
            let Some(existing) = self
                .conflicting_item(returned.as_ref(), partition, LEASE_SORT_KEY, OPERATION)
                .await?
                .filter(|item| optional_string(item, "holder").is_some())
            else {
                // The holder released it since the write: try again.
                return Ok(None);
            };
            Ok(Some(LeaseOutcome::Held {
                by: self.string(&existing, "holder", what)?.to_owned(),
                expires_at: from_millis(self.number(&existing, "expires_at_ms", what)?),
            }))
        })
        .await
    }

    /// [`Store::extend_lease`](super::super::Store::extend_lease): one conditional
    /// `UpdateItem` of the expiry.
    pub(super) async fn extend_held_lease(
        &self,
        key: &str,
        holder: &str,
        generation: Option<u64>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let expires = self.clock.now_millis().saturating_add(duration_millis(ttl));
        let mut update = self
            .update_item(&lease_partition(key), LEASE_SORT_KEY)
            .update_expression("SET #expires = :expires")
            .expression_attribute_names("#expires", "expires_at_ms")
            .expression_attribute_names("#holder", "holder")
            .expression_attribute_values(":expires", number(expires))
            .expression_attribute_values(":holder", string(holder));
        let operation = match generation {
            None => {
                update = update.condition_expression("#holder = :holder");
                "renewing a lease"
            }
            Some(generation) => {
                update = update
                    .condition_expression("#holder = :holder AND #generation = :generation")
                    .expression_attribute_names("#generation", "generation")
                    .expression_attribute_values(
                        ":generation",
                        number(i64::try_from(generation).unwrap_or(i64::MAX)),
                    );
                "confirming a lease"
            }
        };
        self.condition_held(operation, update.send().await)
    }

    /// [`Store::lease`](super::super::Store::lease): one strongly consistent `GetItem`.
    pub(super) async fn read_lease(&self, key: &str) -> Result<Option<LeaseState>, StoreError> {
        let what = &format!("the lease `{key}`");
        let Some(item) = self
            .item(&lease_partition(key), LEASE_SORT_KEY, "reading a lease")
            .await?
        else {
            return Ok(None);
        };
        let Some(holder) = optional_string(&item, "holder").filter(|h| !h.is_empty()) else {
            return Ok(None);
        };
        Ok(Some(LeaseState {
            holder: holder.to_owned(),
            expires_at: from_millis(self.number(&item, "expires_at_ms", what)?),
            generation: u64::try_from(self.number(&item, "generation", what)?).unwrap_or(0),
        }))
    }

    /// Frees the lease if `holder` has it: the holder goes, the generation stays.
    pub(super) async fn release_keeping_generation(
        &self,
        key: &str,
        holder: &str,
    ) -> Result<(), StoreError> {
        let released = self
            .update_item(&lease_partition(key), LEASE_SORT_KEY)
            .update_expression("SET #expires = :zero REMOVE #holder")
            .condition_expression("#holder = :holder")
            .expression_attribute_names("#expires", "expires_at_ms")
            .expression_attribute_names("#holder", "holder")
            .expression_attribute_values(":zero", number(0))
            .expression_attribute_values(":holder", string(holder))
            .send()
            .await;
        // Released, or not ours (any more): either way it is not held by `holder` now.
        self.condition_held("releasing a lease", released)
            .map(|_| ())
    }

    pub(super) async fn supersede_before_gate(
        &self,
        id: &RunId,
        gate: usize,
        finished_at: &str,
    ) -> Result<bool, StoreError> {
        const OPERATION: &str = "superseding a run";
        let what = &format!("run {id}");
        let open =
            &[RunStatus::Queued, RunStatus::Running, RunStatus::Waiting].map(|s| enum_name(&s));
        let gave_up = || format!("run {id} kept changing while it was being superseded; retry");
        let gate = i64::try_from(gate).unwrap_or(i64::MAX);
        self.retry_lost_races(OPERATION, gave_up, move || async move {
            let RunItems { run, stages } = self
                .run_items(id, OPERATION)
                .await?
                .ok_or_else(|| StoreError::RunNotFound { id: id.clone() })?;
            let status = self.string(&run, "status", what)?;
            if !open.iter().any(|open| open == status) {
                return Ok(Some(false));
            }
            let revision = self.number(&run, "revision", what)?;
            for item in &stages {
                let (position, stage) = self.stage_from_item(id, item)?;
                if position >= gate && stage.status != StageStatus::Pending {
                    return Ok(Some(false));
                }
            }
            // One write on the run item, conditioned on the revision read above: any stage
            // transition since (the run starting a stage past its gate) fails it.
            let written = self
                .update_item(&run_partition(id), RUN_SORT_KEY)
                .update_expression("SET #status = :superseded, #finished = :finished")
                .condition_expression(
                    "#revision = :revision AND #status IN (:queued, :running, :waiting)",
                )
                .expression_attribute_names("#status", "status")
                .expression_attribute_names("#finished", "finished_at")
                .expression_attribute_names("#revision", "revision")
                .expression_attribute_values(
                    ":superseded",
                    string(enum_name(&RunStatus::Superseded)),
                )
                .expression_attribute_values(":finished", string(finished_at))
                .expression_attribute_values(":revision", number(revision))
                .expression_attribute_values(":queued", string(&open[0]))
                .expression_attribute_values(":running", string(&open[1]))
                .expression_attribute_values(":waiting", string(&open[2]))
                .send()
                .await;
            // Lost to a stage transition: read again.
            Ok(self.condition_held(OPERATION, written)?.then_some(true))
        })
        .await
    }
}
