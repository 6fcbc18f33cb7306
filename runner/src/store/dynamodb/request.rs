//! Requests to DynamoDB: reading a partition or an item, running a transaction with retries,
//! what a failed request means as a `StoreError`, and backoff for this module's own retries.

use std::time::Duration;

use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{CancellationReason, Put, TransactWriteItem};

use super::super::error::StoreError;
use super::item::{Item, item_key, string};
use super::{DynamoDbStore, MAX_ATTEMPTS, MAX_BACKOFF, PARTITION_KEY};
use crate::backoff::Backoff;
use crate::error_chain;

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
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_values(":pk", string(partition))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|error| self.sdk_error(operation, error))?;
            items.extend(page.items().iter().cloned());
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(items);
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

/// The item a conditional put ran into when its condition failed (`Some(None)` when DynamoDB
/// did not return it), or `None` for any other failure.
pub(super) fn condition_failed<R>(error: &SdkError<PutItemError, R>) -> Option<Option<Item>> {
    match error.as_service_error() {
        Some(PutItemError::ConditionalCheckFailedException(failed)) => Some(failed.item().cloned()),
        _ => None,
    }
}

/// The SDK's builders fail only when a required field is missing; every call here sets them.
pub(super) fn required<T>(built: Result<T, BuildError>) -> T {
    built.expect("every required field of the DynamoDB request is set")
}
