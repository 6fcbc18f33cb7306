//! The DynamoDB store's web sessions: one item per session, `pk` `session#KEY` (KEY the SHA-256
//! of the session id) and `sk` `session`, with `approver` (absent for an anonymous session),
//! `csrf`, `expires_at_ms` (N, what reads compare against the store's clock) and `expires_at`
//! (N, seconds since the epoch: the table's TTL attribute, so DynamoDB deletes expired
//! sessions by itself when TTL is enabled on it; reads never rely on that).

use std::time::Duration;

use super::super::SessionRecord;
use super::super::clock::duration_millis;
use super::super::error::StoreError;
use super::super::sessions::session_key;
use super::item::{Item, item_key, number, optional_string, string};
use super::{DynamoDbStore, PARTITION_KEY, SORT_KEY};

/// The sort key of every session item.
const SESSION_SORT_KEY: &str = "session";

fn session_partition(id: &str) -> String {
    format!("session#{}", session_key(id))
}

impl DynamoDbStore {
    /// Puts the session item, replacing one of the same id.
    pub(super) async fn write_session(
        &self,
        id: &str,
        session: &SessionRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let expires = self.clock.now_millis().saturating_add(duration_millis(ttl));
        let mut item = Item::from([
            (PARTITION_KEY.into(), string(session_partition(id))),
            (SORT_KEY.into(), string(SESSION_SORT_KEY)),
            ("csrf".into(), string(&session.csrf)),
            ("expires_at_ms".into(), number(expires)),
            ("expires_at".into(), number(expires.div_euclid(1000) + 1)),
        ]);
        if let Some(approver) = &session.approver {
            item.insert("approver".into(), string(approver));
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|error| self.sdk_error("keeping a session", error))?;
        Ok(())
    }

    /// The session item, unless missing or expired by the store's clock.
    pub(super) async fn read_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let Some(item) = self
            .item(
                &session_partition(id),
                SESSION_SORT_KEY,
                "reading a session",
            )
            .await?
        else {
            return Ok(None);
        };
        let what = "a session";
        if self.number(&item, "expires_at_ms", what)? <= self.clock.now_millis() {
            return Ok(None);
        }
        Ok(Some(SessionRecord {
            approver: optional_string(&item, "approver").map(str::to_owned),
            csrf: self.string(&item, "csrf", what)?.to_owned(),
        }))
    }

    pub(super) async fn remove_session(&self, id: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(item_key(&session_partition(id), SESSION_SORT_KEY)))
            .send()
            .await
            .map_err(|error| self.sdk_error("ending a session", error))?;
        Ok(())
    }
}
