//! Requests to DynamoDB: reading a partition, a run's items, a query's pages or an item,
//! putting an item only if it is new, running a transaction with retries, retrying what lost a
//! race with another writer, what a failed request means as a `StoreError`, and backoff for
//! this module's own retries.

use std::time::Duration;

use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    CancellationReason, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};

use super::super::error::StoreError;
use super::item::{Item, RUN_SORT_KEY, is_stage, item_key, optional_string, run_partition, string};
use super::{DynamoDbStore, MAX_ATTEMPTS, MAX_BACKOFF, PARTITION_KEY, SORT_KEY};
use crate::backoff::Backoff;
use crate::error_chain;
use crate::run::RunId;

impl DynamoDbStore {
    pub(super) fn table_missing(&self) -> StoreError {
        let region = self.client.config().region().map(ToString::to_string);
        StoreError::TableMissing {
            table: self.table.clone(),
            region: region
                .clone()
                .unwrap_or_else(|| "the configured region".into()),
            command: Self::create_table_command(&self.table, region.as_deref()),
        }
    }

    /// What a failed request means for the person running envelope-runner.
    /// An UpdateItem's result as whether its condition held: `true` when the update was made,
    /// `false` when DynamoDB refused it for its condition, or the error.
    pub(super) fn condition_held<O, R>(
        &self,
        operation: &'static str,
        result: Result<O, SdkError<UpdateItemError, R>>,
    ) -> Result<bool, StoreError>
    where
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        match result {
            Ok(_) => Ok(true),
            Err(error)
                if matches!(
                    error.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(false)
            }
            Err(error) => Err(self.sdk_error(operation, error)),
        }
    }

    pub(super) fn sdk_error<E, R>(
        &self,
        operation: &'static str,
        error: SdkError<E, R>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        match error.code() {
            Some("ResourceNotFoundException") => return self.table_missing(),
            Some(code) if is_throttling(code) => {
                return StoreError::Throttled {
                    table: self.table.clone(),
                    operation,
                };
            }
            _ => {}
        }
        if let Some(timeout) = crate::timeouts::AwsTimeout::of(&error, "DynamoDB") {
            return StoreError::TimedOut {
                table: self.table.clone(),
                operation,
                detail: timeout.to_string(),
            };
        }
        let read = crate::aws_error::AwsFailure::of(&error);
        if read.is_credentials() {
            return StoreError::AwsCredentials {
                table: self.table.clone(),
                operation,
                detail: read.to_string(),
            };
        }
        let unreachable = match &error {
            SdkError::TimeoutError(_) => true,
            SdkError::DispatchFailure(failure) => failure.is_io() || failure.is_timeout(),
            _ => false,
        };
        let detail = match &error {
            _ if unreachable => format!(
                "DynamoDB did not answer ({}); check the network, the AWS region, and \
                 AWS_ENDPOINT_URL if an emulator or VPC endpoint is meant",
                error_chain(&error)
            ),
            SdkError::ServiceError(_) => format!(
                "{}: {}",
                error.code().unwrap_or("error"),
                error.message().unwrap_or("no message")
            ),
            _ => format!(
                "{}; check the AWS credentials and region",
                error_chain(&error)
            ),
        };
        StoreError::DynamoDb {
            table: self.table.clone(),
            operation,
            detail,
        }
    }

    /// Every item of one partition, in sort key order, read with strong consistency.
    pub(super) async fn partition(
        &self,
        partition: &str,
        operation: &'static str,
    ) -> Result<Vec<Item>, StoreError> {
        let query = self
            .query()
            .consistent_read(true)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_values(":pk", string(partition));
        self.query_items(query, None, operation, |item| Ok(item.clone()))
            .await
    }

    /// Run `id`'s item and its stages' items (its approvals left out), read together with
    /// strong consistency; `None` for an unknown run.
    pub(super) async fn run_items(
        &self,
        id: &RunId,
        operation: &'static str,
    ) -> Result<Option<RunItems>, StoreError> {
        let mut items = self.partition(&run_partition(id), operation).await?;
        let Some(at) = items
            .iter()
            .position(|item| optional_string(item, SORT_KEY) == Some(RUN_SORT_KEY))
        else {
            return Ok(None);
        };
        let run = items.remove(at);
        items.retain(is_stage);
        Ok(Some(RunItems { run, stages: items }))
    }

    /// Runs `attempt` until it comes to an answer (`Some`), with backoff between attempts:
    /// `None` means it lost a race with another writer and reads again. After
    /// [`MAX_ATTEMPTS`] lost races the operation fails with `gave_up` as its detail.
    pub(super) async fn retry_lost_races<T, Attempt>(
        &self,
        operation: &'static str,
        gave_up: impl FnOnce() -> String,
        mut attempt: impl FnMut() -> Attempt,
    ) -> Result<T, StoreError>
    where
        Attempt: Future<Output = Result<Option<T>, StoreError>>,
    {
        for number in 0..MAX_ATTEMPTS {
            if number > 0 {
                tokio::time::sleep(backoff(number)).await;
            }
            if let Some(answer) = attempt().await? {
                return Ok(answer);
            }
        }
        Err(StoreError::DynamoDb {
            table: self.table.clone(),
            operation,
            detail: gave_up(),
        })
    }

    /// What `query` finds, page after page, each item read by `read`; with a `limit`, no more
    /// than that many (each page asks for what is still missing, and DynamoDB ends a page at
    /// 1 MB whatever its limit says).
    pub(super) async fn query_items<T>(
        &self,
        query: QueryFluentBuilder,
        limit: Option<usize>,
        operation: &'static str,
        mut read: impl FnMut(&Item) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut found = Vec::new();
        let missing = |found: &Vec<T>| limit.map(|limit| limit.saturating_sub(found.len()));
        if missing(&found) == Some(0) {
            return Ok(found);
        }
        let mut start = None;
        loop {
            let page = query
                .clone()
                .set_limit(
                    missing(&found).map(|missing| i32::try_from(missing).unwrap_or(i32::MAX)),
                )
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|error| self.sdk_error(operation, error))?;
            for item in page.items() {
                found.push(read(item)?);
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() || missing(&found) == Some(0) {
                found.truncate(limit.unwrap_or(usize::MAX));
                return Ok(found);
            }
        }
    }

    /// One item by its keys, read with strong consistency.
    pub(super) async fn item(
        &self,
        partition: &str,
        sort: &str,
        operation: &'static str,
    ) -> Result<Option<Item>, StoreError> {
        let read = self
            .client
            .get_item()
            .table_name(&self.table)
            .consistent_read(true)
            .set_key(Some(item_key(partition, sort)))
            .send()
            .await
            .map_err(|error| self.sdk_error(operation, error))?;
        Ok(read.item().cloned())
    }

    /// Runs a transaction, retrying it with backoff while DynamoDB cancels it for throttling or
    /// a conflict with another transaction. `Ok(Err(reasons))` when a condition failed; the
    /// reasons are in the order of `items`.
    pub(super) async fn transact(
        &self,
        operation: &'static str,
        items: Vec<TransactWriteItem>,
    ) -> Result<Result<(), Vec<CancellationReason>>, StoreError> {
        let mut attempt = 0;
        loop {
            let error = match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await
            {
                Ok(_) => return Ok(Ok(())),
                Err(error) => error,
            };
            let reasons = match error.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                    cancelled.cancellation_reasons().to_vec()
                }
                _ => return Err(self.sdk_error(operation, error)),
            };
            let code = |reason: &CancellationReason| reason.code().unwrap_or("None").to_owned();
            if reasons
                .iter()
                .any(|reason| code(reason) == "ConditionalCheckFailed")
            {
                return Ok(Err(reasons));
            }
            let retryable = reasons.iter().all(|reason| {
                matches!(
                    code(reason).as_str(),
                    "None"
                        | "TransactionConflict"
                        | "ThrottlingError"
                        | "ProvisionedThroughputExceeded"
                )
            });
            if !retryable {
                let detail = reasons
                    .iter()
                    .filter(|reason| code(reason) != "None")
                    .map(|reason| {
                        format!(
                            "{}: {}",
                            code(reason),
                            reason.message().unwrap_or("no message")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(StoreError::DynamoDb {
                    table: self.table.clone(),
                    operation,
                    detail: format!("DynamoDB cancelled the transaction ({detail})"),
                });
            }
            attempt += 1;
            if attempt >= MAX_ATTEMPTS {
                return Err(StoreError::Throttled {
                    table: self.table.clone(),
                    operation,
                });
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// Puts the item of `partition` and `sort` with `attributes`, only if there is none yet:
    /// `None` when this call wrote it, else the item written first. Items put this way are
    /// never deleted, so that one is there; if it is not, `what` names it in the error.
    pub(super) async fn put_if_absent(
        &self,
        partition: &str,
        sort: &str,
        attributes: Item,
        operation: &'static str,
        what: &str,
    ) -> Result<Option<Item>, StoreError> {
        let mut item = item_key(partition, sort);
        item.extend(attributes);
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let returned = match written {
            Ok(_) => return Ok(None),
            Err(error) => match error.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                    failed.item().cloned()
                }
                _ => return Err(self.sdk_error(operation, error)),
            },
        };
        let existing = self
            .conflicting_item(returned.as_ref(), partition, sort, operation)
            .await?
            .ok_or_else(|| self.unreadable(what, "it disappeared"))?;
        Ok(Some(existing))
    }

    /// An `UpdateItem` of the item of `partition` and `sort`, for the caller to complete.
    pub(super) fn update_item(&self, partition: &str, sort: &str) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key(partition, sort)))
    }

    /// A `Query` of the table, for the caller to complete.
    pub(super) fn query(&self) -> QueryFluentBuilder {
        self.client.query().table_name(&self.table)
    }

    /// The existing item a conditional put ran into: DynamoDB returns it with the failure when
    /// asked to; otherwise (or if it is gone by now) it is read.
    pub(super) async fn conflicting_item(
        &self,
        returned: Option<&Item>,
        partition: &str,
        sort: &str,
        operation: &'static str,
    ) -> Result<Option<Item>, StoreError> {
        match returned {
            Some(item) if !item.is_empty() => Ok(Some(item.clone())),
            _ => self.item(partition, sort, operation).await,
        }
    }

    pub(super) fn put(&self, item: Item) -> Put {
        required(
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .build(),
        )
    }
}

/// A run's items, as [`DynamoDbStore::run_items`] reads them.
pub(super) struct RunItems {
    pub(super) run: Item,
    /// In sort key order, that is by name.
    pub(super) stages: Vec<Item>,
}

fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "TransactionInProgressException"
    )
}

/// The wait before this module's own retry number `attempt` (1-based): exponential from
/// 100 ms up to [`MAX_BACKOFF`], with equal jitter.
pub(super) fn backoff(attempt: u32) -> Duration {
    const RETRY: Backoff = Backoff::equal(MAX_ATTEMPTS, Duration::from_millis(100), MAX_BACKOFF);
    RETRY.delay(attempt, &mut rand::rng())
}

/// The SDK's builders fail only when a required field is missing; every call here sets them.
pub(super) fn required<T>(built: Result<T, BuildError>) -> T {
    built.expect("every required field of the DynamoDB request is set")
}
