//! Items: the keys of each kind of item, attribute values, item sizes, and turning runs, stages
//! and summaries into items and back (with the error for an item that cannot be read).

use std::collections::HashMap;
use std::path::PathBuf;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::super::RunSummary;
use super::super::error::StoreError;
use super::{DynamoDbStore, MAX_ITEM_BYTES, PARTITION_KEY, SORT_KEY};
use crate::run::{RunId, RunStatus, StageRecord};

impl DynamoDbStore {
    fn store_name(&self) -> PathBuf {
        PathBuf::from(format!("dynamodb://{}", self.table))
    }

    pub(super) fn unreadable(
        &self,
        what: impl Into<String>,
        detail: impl Into<String>,
    ) -> StoreError {
        StoreError::UnreadableRecord {
            path: self.store_name(),
            what: what.into(),
            detail: detail.into(),
        }
    }

    pub(super) fn parse_json<T: DeserializeOwned>(
        &self,
        json: &str,
        what: &str,
    ) -> Result<T, StoreError> {
        crate::store::codec::from_json(json).map_err(|detail| self.unreadable(what, detail))
    }

    pub(super) fn string<'a>(
        &self,
        item: &'a Item,
        name: &str,
        what: &str,
    ) -> Result<&'a str, StoreError> {
        optional_string(item, name)
            .ok_or_else(|| self.unreadable(what, format!("the attribute `{name}` is missing")))
    }

    pub(super) fn number(&self, item: &Item, name: &str, what: &str) -> Result<i64, StoreError> {
        match item.get(name) {
            Some(AttributeValue::N(number)) => number
                .parse()
                .map_err(|_| self.unreadable(what, format!("`{name}` is not a whole number"))),
            _ => Err(self.unreadable(what, format!("the attribute `{name}` is missing"))),
        }
    }

    pub(super) fn check_size(
        &self,
        item: &Item,
        what: impl FnOnce() -> String,
    ) -> Result<(), StoreError> {
        let size = item_size(item);
        if size > MAX_ITEM_BYTES {
            return Err(StoreError::OutOfRange {
                what: format!(
                    "{} ({} KB; a DynamoDB item holds at most {} KB)",
                    what(),
                    size.div_ceil(1024),
                    MAX_ITEM_BYTES / 1024
                ),
            });
        }
        Ok(())
    }

    pub(super) fn stage_item(
        &self,
        id: &RunId,
        position: i64,
        stage: &StageRecord,
    ) -> Result<Item, StoreError> {
        let item = Item::from([
            (PARTITION_KEY.into(), string(run_partition(id))),
            (SORT_KEY.into(), string(stage_sort_key(&stage.name))),
            ("position".into(), number(position)),
            (
                "finished".into(),
                AttributeValue::Bool(stage.status.is_finished()),
            ),
            ("record".into(), string(to_json(stage))),
        ]);
        self.check_size(&item, || format!("stage `{}` of run {id}", stage.name))?;
        Ok(item)
    }

    pub(super) fn stage_from_item(
        &self,
        id: &RunId,
        item: &Item,
    ) -> Result<(i64, StageRecord), StoreError> {
        let name = optional_string(item, SORT_KEY)
            .and_then(|sort| sort.strip_prefix(STAGE_PREFIX))
            .unwrap_or_default();
        let what = format!("stage `{name}` of run {id}");
        let position = self.number(item, "position", &what)?;
        let stage = self.parse_json(self.string(item, "record", &what)?, &what)?;
        Ok((position, stage))
    }

    pub(super) fn summary_from_item(&self, item: &Item) -> Result<RunSummary, StoreError> {
        let id = self.string(item, "run_id", "a run")?;
        let what = format!("run {id}");
        let owned = |name| optional_string(item, name).map(str::to_owned);
        Ok(RunSummary {
            id: RunId(id.to_owned()),
            pipeline: self.string(item, "pipeline", &what)?.to_owned(),
            status: self.status(self.string(item, "status", &what)?, &what)?,
            git_ref: self.string(item, "git_ref", &what)?.to_owned(),
            sha: owned("sha"),
            tag: owned("tag"),
            created_at: self.string(item, "created_at", &what)?.to_owned(),
            finished_at: owned("finished_at"),
            current_stage: owned("current_stage"),
        })
    }

    fn status(&self, name: &str, what: &str) -> Result<RunStatus, StoreError> {
        serde_json::from_value(Value::String(name.to_owned()))
            .map_err(|_| self.unreadable(what, format!("unknown status `{name}`")))
    }
}

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) const RUN_SORT_KEY: &str = "run";
pub(super) const STAGE_PREFIX: &str = "stage#";
pub(super) const LEASE_SORT_KEY: &str = "lease";
pub(super) const TRIGGER_SORT_KEY: &str = "trigger";

pub(super) fn run_partition(id: &RunId) -> String {
    format!("run#{id}")
}

pub(super) fn stage_sort_key(name: &str) -> String {
    format!("{STAGE_PREFIX}{name}")
}

pub(super) fn approval_sort_key(stage: &str) -> String {
    format!("approval#{stage}")
}

pub(super) fn events_partition(id: &RunId) -> String {
    format!("events#{id}")
}

/// Zero-padded so that the string order of sort keys is the order of sequence numbers.
pub(super) fn event_sort_key(seq: u64) -> String {
    format!("{seq:020}")
}

pub(super) fn lease_partition(key: &str) -> String {
    format!("lease#{key}")
}

pub(super) fn trigger_partition(key: &str) -> String {
    format!("trigger#{key}")
}

pub(super) fn is_stage(item: &Item) -> bool {
    optional_string(item, SORT_KEY).is_some_and(|sort| sort.starts_with(STAGE_PREFIX))
}

pub(super) fn item_key(partition: &str, sort: &str) -> Item {
    Item::from([
        (PARTITION_KEY.into(), string(partition)),
        (SORT_KEY.into(), string(sort)),
    ])
}

pub(super) fn string(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn number(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn optional_string<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Some(value),
        _ => None,
    }
}

/// An item's size as DynamoDB counts it, close enough for the checks here: attribute names
/// plus values (numbers counted as their text).
fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(text) | AttributeValue::N(text) => text.len(),
                    _ => 1,
                }
        })
        .sum()
}

pub(super) use crate::store::codec::{enum_name, run_record_json, to_json};

/// Sequence numbers are limited to the SQLite store's range, so both stores accept the same.
pub(super) fn event_seq(seq: u64) -> Result<u64, StoreError> {
    if i64::try_from(seq).is_ok() {
        Ok(seq)
    } else {
        Err(StoreError::OutOfRange {
            what: format!("event sequence number {seq}"),
        })
    }
}
