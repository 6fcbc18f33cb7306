//! The `Store` contract on the DynamoDB table: runs, stages, listings, events, approvals,
//! leases and trigger claims, each as the conditional write or consistent read it needs.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeValue, Put, PutRequest, TransactWriteItem, Update, WriteRequest,
};
use serde_json::Value;

use super::super::{
    ApprovalOutcome, Clock, LeaseOutcome, LeaseState, RunSummary, SessionRecord, Store, StoreError,
};
use super::item::{
    Item, RUN_SORT_KEY, STAGE_PREFIX, TRIGGER_SORT_KEY, approval_sort_key, enum_name, event_seq,
    event_sort_key, events_partition, item_key, number, optional_string, run_partition,
    run_record_json, string, to_json, trigger_partition,
};
use super::request::{RunItems, backoff, required};
use super::{
    DynamoDbStore, LISTING, LISTING_RUNS, MAX_ATTEMPTS, MAX_BATCH_ITEMS, MAX_TRANSACTION_ITEMS,
    PARTITION_KEY, RUNS_BY_ID, RUNS_BY_PIPELINE, SORT_KEY,
};
use crate::run::{ApprovalRecord, RunId, RunRecord, RunStatus, StageRecord};

#[async_trait::async_trait]
impl Store for DynamoDbStore {
    fn clock(&self) -> Clock {
        self.clock.clone()
    }

    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        if run.stages.len() >= MAX_TRANSACTION_ITEMS {
            return Err(StoreError::OutOfRange {
                what: format!(
                    "run {} with {} stages (a DynamoDB store keeps runs of up to {} stages)",
                    run.id,
                    run.stages.len(),
                    MAX_TRANSACTION_ITEMS - 1
                ),
            });
        }
        let sha = run.trigger.sha.clone().or_else(|| {
            run.stages
                .iter()
                .find_map(|stage| stage.outputs.sha.clone())
        });
        let mut item = Item::from([
            (PARTITION_KEY.into(), string(run_partition(&run.id))),
            (SORT_KEY.into(), string(RUN_SORT_KEY)),
            ("run_id".into(), string(&run.id.0)),
            ("pipeline".into(), string(&run.pipeline)),
            (LISTING.into(), string(LISTING_RUNS)),
            ("status".into(), string(enum_name(&run.status))),
            ("created_at".into(), string(&run.created_at)),
            ("git_ref".into(), string(&run.trigger.git_ref)),
            ("revision".into(), number(0)),
            ("record".into(), string(run_record_json(run))),
        ]);
        let optional = [
            ("finished_at", run.finished_at.clone()),
            ("sha", sha),
            ("tag", run.trigger.tag.clone()),
            (
                "current_stage",
                run.next_stage().map(|stage| stage.name.clone()),
            ),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                item.insert(name.into(), string(value));
            }
        }
        self.check_size(&item, || format!("run {}", run.id))?;
        let put_run = required(
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .build(),
        );
        let mut items = vec![TransactWriteItem::builder().put(put_run).build()];
        for (position, stage) in run.stages.iter().enumerate() {
            let position = i64::try_from(position).unwrap_or(i64::MAX);
            let put = self.put(self.stage_item(&run.id, position, stage)?);
            items.push(TransactWriteItem::builder().put(put).build());
        }
        match self.transact("creating a run", items).await? {
            Ok(()) => Ok(()),
            Err(_) => Err(StoreError::RunExists { id: run.id.clone() }),
        }
    }

    async fn get_run(&self, id: &RunId) -> Result<Option<RunRecord>, StoreError> {
        let Some(RunItems {
            run: run_item,
            stages,
        }) = self.run_items(id, "reading a run").await?
        else {
            return Ok(None);
        };
        let what = format!("run {id}");
        let mut value: Value = self.parse_json(self.string(&run_item, "record", &what)?, &what)?;
        if let Some(object) = value.as_object_mut() {
            let status = self.string(&run_item, "status", &what)?;
            object.insert("status".into(), Value::String(status.to_owned()));
            object.insert("stages".into(), Value::Array(Vec::new()));
        }
        let mut run: RunRecord = serde_json::from_value(value)
            .map_err(|error| self.unreadable(&what, error.to_string()))?;
        run.finished_at = optional_string(&run_item, "finished_at").map(str::to_owned);
        let mut stages = stages
            .iter()
            .map(|item| self.stage_from_item(id, item))
            .collect::<Result<Vec<_>, _>>()?;
        stages.sort_by_key(|(position, _)| *position);
        run.stages = stages.into_iter().map(|(_, stage)| stage).collect();
        Ok(Some(run))
    }

    async fn save_stage(&self, id: &RunId, stage: &StageRecord) -> Result<(), StoreError> {
        const OPERATION: &str = "recording a stage transition";
        let gave_up =
            || format!("other processes kept recording stages of run {id} at the same time; retry");
        self.retry_lost_races(OPERATION, gave_up, move || async move {
            let RunItems { run, stages: items } = self
                .run_items(id, OPERATION)
                .await?
                .ok_or_else(|| StoreError::RunNotFound { id: id.clone() })?;
            let revision = self.number(&run, "revision", &format!("run {id}"))?;
            // (position, name, finished) of every stage, with this one replaced or appended.
            let mut stages = Vec::new();
            for item in &items {
                let what = format!("a stage of run {id}");
                let sort = self.string(item, SORT_KEY, &what)?;
                let name = &sort[STAGE_PREFIX.len()..];
                let finished = matches!(item.get("finished"), Some(AttributeValue::Bool(true)));
                stages.push((self.number(item, "position", &what)?, name, finished));
            }
            let position = match stages.iter().find(|(_, name, _)| *name == stage.name) {
                Some((position, _, _)) => *position,
                None => stages
                    .iter()
                    .map(|(position, _, _)| position + 1)
                    .max()
                    .unwrap_or(0),
            };
            stages.retain(|(_, name, _)| *name != stage.name);
            stages.push((position, stage.name.as_str(), stage.status.is_finished()));
            stages.sort_by_key(|(position, _, _)| *position);
            let current_stage = stages
                .iter()
                .find(|(_, _, finished)| !finished)
                .map(|(_, name, _)| (*name).to_owned());

            let put_stage = self.put(self.stage_item(id, position, stage)?);
            let mut set = vec!["#revision = :next"];
            let mut remove = Vec::new();
            let mut names = HashMap::from([("#revision".to_owned(), "revision".to_owned())]);
            let mut values = HashMap::from([
                (":next".to_owned(), number(revision + 1)),
                (":revision".to_owned(), number(revision)),
            ]);
            names.insert("#current".into(), "current_stage".into());
            match current_stage {
                Some(current) => {
                    set.push("#current = :current");
                    values.insert(":current".into(), string(current));
                }
                None => remove.push("#current"),
            }
            if let Some(sha) = &stage.outputs.sha {
                set.push("#sha = if_not_exists(#sha, :sha)");
                names.insert("#sha".into(), "sha".into());
                values.insert(":sha".into(), string(sha));
            }
            let mut expression = format!("SET {}", set.join(", "));
            if !remove.is_empty() {
                expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
            }
            let update_run = required(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(item_key(&run_partition(id), RUN_SORT_KEY)))
                    .update_expression(expression)
                    .condition_expression("#revision = :revision")
                    .set_expression_attribute_names(Some(names))
                    .set_expression_attribute_values(Some(values))
                    .build(),
            );
            let items = vec![
                TransactWriteItem::builder().put(put_stage).build(),
                TransactWriteItem::builder().update(update_run).build(),
            ];
            // A failed condition means another process recorded a stage of this run since the
            // read: read again and recompute.
            Ok(self.transact(OPERATION, items).await?.ok())
        })
        .await
    }

    async fn set_run_status(
        &self,
        id: &RunId,
        status: RunStatus,
        finished_at: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut update = self
            .update_item(&run_partition(id), RUN_SORT_KEY)
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#finished", "finished_at")
            .expression_attribute_values(":status", string(enum_name(&status)));
        update = match finished_at {
            Some(finished_at) => update
                .update_expression("SET #status = :status, #finished = :finished")
                .expression_attribute_values(":finished", string(finished_at)),
            None => update.update_expression("SET #status = :status REMOVE #finished"),
        };
        if self.condition_held("setting a run's status", update.send().await)? {
            Ok(())
        } else {
            Err(StoreError::RunNotFound { id: id.clone() })
        }
    }

    async fn list_runs(
        &self,
        pipeline: Option<&str>,
        limit: usize,
        before: Option<&RunId>,
    ) -> Result<Vec<RunSummary>, StoreError> {
        let (index, partition_name, partition) = match pipeline {
            Some(pipeline) => (RUNS_BY_PIPELINE, "pipeline", pipeline),
            None => (RUNS_BY_ID, LISTING, LISTING_RUNS),
        };
        let mut condition = "#partition = :partition".to_owned();
        if before.is_some() {
            condition.push_str(" AND #run_id < :before");
        }
        let mut query = self
            .query()
            .index_name(index)
            .key_condition_expression(condition)
            .scan_index_forward(false)
            .expression_attribute_names("#partition", partition_name)
            .expression_attribute_values(":partition", string(partition));
        if let Some(before) = before {
            query = query
                .expression_attribute_names("#run_id", "run_id")
                .expression_attribute_values(":before", string(&before.0));
        }
        self.query_items(query, Some(limit), "listing runs", |item| {
            self.summary_from_item(item)
        })
        .await
    }

    async fn append_events(&self, id: &RunId, events: &[(u64, String)]) -> Result<(), StoreError> {
        const OPERATION: &str = "recording events";
        // One put per sequence number: the last line given for it, as a rewrite would leave it
        // (a batch may not name one item twice).
        let mut latest = BTreeMap::new();
        for (seq, line) in events {
            event_seq(*seq)?;
            latest.insert(*seq, line);
        }
        let mut requests = Vec::with_capacity(latest.len());
        for (seq, line) in latest {
            let item = Item::from([
                (PARTITION_KEY.into(), string(events_partition(id))),
                (SORT_KEY.into(), string(event_sort_key(seq))),
                ("line".into(), string(line.as_str())),
            ]);
            self.check_size(&item, || format!("event {seq} of run {id}"))?;
            let put = required(PutRequest::builder().set_item(Some(item)).build());
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        for chunk in requests.chunks(MAX_BATCH_ITEMS) {
            let mut pending = chunk.to_vec();
            let mut attempt = 0;
            while !pending.is_empty() {
                if attempt > 0 {
                    if attempt >= MAX_ATTEMPTS {
                        return Err(StoreError::Throttled {
                            table: self.table.clone(),
                            operation: OPERATION,
                        });
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                }
                attempt += 1;
                let written = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(|error| self.sdk_error(OPERATION, error))?;
                // DynamoDB hands back what it did not write (throttled partitions): retry that.
                pending = written
                    .unprocessed_items()
                    .and_then(|unprocessed| unprocessed.get(&self.table))
                    .cloned()
                    .unwrap_or_default();
            }
        }
        Ok(())
    }

    async fn events(
        &self,
        id: &RunId,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let after = after_seq.map(event_seq).transpose()?;
        let mut condition = "#pk = :pk".to_owned();
        if after.is_some() {
            condition.push_str(" AND #sk > :after");
        }
        let mut query = self
            .query()
            .consistent_read(true)
            .key_condition_expression(condition)
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_values(":pk", string(events_partition(id)));
        if let Some(after) = after {
            query = query
                .expression_attribute_names("#sk", SORT_KEY)
                .expression_attribute_values(":after", string(event_sort_key(after)));
        }
        self.query_items(query, Some(limit), "reading events", |item| {
            let what = format!("an event of run {id}");
            let sort = self.string(item, SORT_KEY, &what)?;
            let seq = sort
                .parse()
                .map_err(|_| self.unreadable(&what, format!("sequence number `{sort}`")))?;
            Ok((seq, self.string(item, "line", &what)?.to_owned()))
        })
        .await
    }

    async fn decide_approval(
        &self,
        id: &RunId,
        stage: &str,
        decision: &ApprovalRecord,
    ) -> Result<ApprovalOutcome, StoreError> {
        const OPERATION: &str = "recording an approval";
        let partition = run_partition(id);
        // Runs are never deleted, so a run seen here still exists at the write.
        if self
            .item(&partition, RUN_SORT_KEY, OPERATION)
            .await?
            .is_none()
        {
            return Err(StoreError::RunNotFound { id: id.clone() });
        }
        let what = format!("the approval of stage `{stage}` of run {id}");
        let record = Item::from([("record".into(), string(to_json(decision)))]);
        let sort = approval_sort_key(stage);
        match self
            .put_if_absent(&partition, &sort, record, OPERATION, &what)
            .await?
        {
            None => Ok(ApprovalOutcome::Recorded),
            Some(first) => {
                let record = self.parse_json(self.string(&first, "record", &what)?, &what)?;
                Ok(ApprovalOutcome::AlreadyDecided(record))
            }
        }
    }

    async fn approval(
        &self,
        id: &RunId,
        stage: &str,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let item = self
            .item(
                &run_partition(id),
                &approval_sort_key(stage),
                "reading an approval",
            )
            .await?;
        let what = format!("the approval of stage `{stage}` of run {id}");
        item.map(|item| self.parse_json(self.string(&item, "record", &what)?, &what))
            .transpose()
    }

    async fn acquire_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        self.acquire_generation(key, holder, ttl).await
    }

    async fn extend_lease(
        &self,
        key: &str,
        holder: &str,
        generation: Option<u64>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.extend_held_lease(key, holder, generation, ttl).await
    }

    async fn lease(&self, key: &str) -> Result<Option<LeaseState>, StoreError> {
        self.read_lease(key).await
    }

    async fn release_lease(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        self.release_keeping_generation(key, holder).await
    }

    async fn supersede_run(
        &self,
        id: &RunId,
        gate: usize,
        finished_at: &str,
    ) -> Result<bool, StoreError> {
        self.supersede_before_gate(id, gate, finished_at).await
    }

    async fn claim_trigger(&self, key: &str, run: &RunId) -> Result<Option<RunId>, StoreError> {
        let what = format!("the claim of trigger `{key}`");
        let claim = Item::from([
            ("first_run".into(), string(&run.0)),
            ("claimed_at_ms".into(), number(self.clock.now_millis())),
        ]);
        let Some(first) = self
            .put_if_absent(
                &trigger_partition(key),
                TRIGGER_SORT_KEY,
                claim,
                "claiming a trigger",
                &what,
            )
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(RunId(
            self.string(&first, "first_run", &what)?.to_owned(),
        )))
    }

    async fn put_session(
        &self,
        id: &str,
        session: &SessionRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.write_session(id, session, ttl).await
    }

    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.read_session(id).await
    }

    async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        self.remove_session(id).await
    }
}
