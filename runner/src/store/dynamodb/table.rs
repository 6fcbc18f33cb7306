//! The table's layout: creating it with its keys and indexes (or printing the command that
//! does), and checking that an existing table has them before the store uses it.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement, KeyType,
    Projection, ProjectionType, ScalarAttributeType, TableDescription, TableStatus,
};
use serde_json::Value;

use super::super::error::StoreError;
use super::request::required;
use super::{
    DynamoDbStore, LISTED_ATTRIBUTES, LISTING, PARTITION_KEY, RUNS_BY_ID, RUNS_BY_PIPELINE,
    SORT_KEY,
};

impl DynamoDbStore {
    /// Creates `table` with the key schema and indexes the store needs (on-demand capacity)
    /// unless it exists, and waits until it is active. `true` if this call created it. An
    /// existing table is not checked here; [`DynamoDbStore::open`] does that.
    pub async fn create_table_if_missing(client: &Client, table: &str) -> Result<bool, StoreError> {
        let error = |detail: String| StoreError::DynamoDb {
            table: table.into(),
            operation: "creating the table",
            detail,
        };
        let created = match client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .set_attribute_definitions(Some(attribute_definitions()))
            .set_key_schema(Some(vec![
                key(PARTITION_KEY, KeyType::Hash),
                key(SORT_KEY, KeyType::Range),
            ]))
            .set_global_secondary_indexes(Some(global_secondary_indexes()))
            .send()
            .await
        {
            Ok(_) => true,
            Err(failure) if failure.code() == Some("ResourceInUseException") => false,
            Err(failure) => return Err(error(crate::aws_error::aws_error_line(&failure))),
        };
        // A new table (or one another process is creating) takes a while to become usable.
        for attempt in 0.. {
            let described = client
                .describe_table()
                .table_name(table)
                .send()
                .await
                .map_err(|failure| error(crate::aws_error::aws_error_line(&failure)))?;
            let active = described.table().is_some_and(|description| {
                description.table_status() == Some(&TableStatus::Active)
                    && description
                        .global_secondary_indexes()
                        .iter()
                        .all(|index| index.index_status() == Some(&IndexStatus::Active))
            });
            if active {
                break;
            }
            if attempt == 300 {
                return Err(error(
                    "the table did not become active within 5 minutes".into(),
                ));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(created)
    }

    /// The command that creates the table as [`DynamoDbStore::create_table_if_missing`] does,
    /// for a person to run once.
    pub fn create_table_command(table: &str, region: Option<&str>) -> String {
        let region = region
            .map(|region| format!(" --region {region}"))
            .unwrap_or_default();
        let definitions: Vec<String> = attribute_definitions()
            .iter()
            .map(definition_argument)
            .collect();
        let indexes: Vec<Value> = [RUNS_BY_PIPELINE, RUNS_BY_ID]
            .into_iter()
            .map(|index| {
                serde_json::json!({
                    "IndexName": index,
                    "KeySchema": [
                        {"AttributeName": index_partition_key(index), "KeyType": "HASH"},
                        {"AttributeName": "run_id", "KeyType": "RANGE"},
                    ],
                    "Projection": {
                        "ProjectionType": "INCLUDE",
                        "NonKeyAttributes": index_projection(index),
                    },
                })
            })
            .collect();
        format!(
            "aws dynamodb create-table --table-name {table}{region} --billing-mode PAY_PER_REQUEST \\\n  \
             --attribute-definitions {} \\\n  \
             --key-schema AttributeName={PARTITION_KEY},KeyType=HASH AttributeName={SORT_KEY},KeyType=RANGE \\\n  \
             --global-secondary-indexes '{}'",
            definitions.join(" "),
            Value::Array(indexes),
        )
    }
}

/// Every attribute used as a key, of the table or of an index.
fn attribute_definitions() -> Vec<AttributeDefinition> {
    [PARTITION_KEY, SORT_KEY, "pipeline", LISTING, "run_id"]
        .into_iter()
        .map(|name| {
            required(
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::S)
                    .build(),
            )
        })
        .collect()
}

/// An attribute definition as `aws dynamodb create-table --attribute-definitions` takes it.
pub(in crate::store) fn definition_argument(definition: &AttributeDefinition) -> String {
    format!(
        "AttributeName={},AttributeType={}",
        definition.attribute_name(),
        definition.attribute_type().as_str()
    )
}

fn index_partition_key(index: &str) -> &'static str {
    if index == RUNS_BY_PIPELINE {
        "pipeline"
    } else {
        LISTING
    }
}

/// The non-key attributes an index carries: the listed ones apart from its own keys.
fn index_projection(index: &str) -> Vec<&'static str> {
    LISTED_ATTRIBUTES
        .into_iter()
        .filter(|name| *name != index_partition_key(index))
        .collect()
}

fn global_secondary_indexes() -> Vec<GlobalSecondaryIndex> {
    [RUNS_BY_PIPELINE, RUNS_BY_ID]
        .into_iter()
        .map(|index| {
            let projection = Projection::builder()
                .projection_type(ProjectionType::Include)
                .set_non_key_attributes(Some(
                    index_projection(index)
                        .into_iter()
                        .map(Into::into)
                        .collect(),
                ))
                .build();
            required(
                GlobalSecondaryIndex::builder()
                    .index_name(index)
                    .key_schema(key(index_partition_key(index), KeyType::Hash))
                    .key_schema(key("run_id", KeyType::Range))
                    .projection(projection)
                    .build(),
            )
        })
        .collect()
}

fn key(name: &str, key_type: KeyType) -> KeySchemaElement {
    required(
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build(),
    )
}

/// Checks that an existing table has the store's keys and indexes, so that a table made for
/// something else is refused before anything is written to it.
pub(super) fn check_layout(table: &str, description: &TableDescription) -> Result<(), StoreError> {
    let foreign = |detail: String| StoreError::ForeignTable {
        table: table.into(),
        detail,
    };
    let keys = |schema: &[KeySchemaElement]| -> Vec<(String, KeyType)> {
        schema
            .iter()
            .map(|element| {
                (
                    element.attribute_name().to_owned(),
                    element.key_type().clone(),
                )
            })
            .collect()
    };
    let expected = vec![
        (PARTITION_KEY.to_owned(), KeyType::Hash),
        (SORT_KEY.to_owned(), KeyType::Range),
    ];
    if keys(description.key_schema()) != expected {
        return Err(foreign(format!(
            "its key is not `{PARTITION_KEY}` (partition) and `{SORT_KEY}` (sort)"
        )));
    }
    for index in [RUNS_BY_PIPELINE, RUNS_BY_ID] {
        let found = description
            .global_secondary_indexes()
            .iter()
            .find(|found| found.index_name() == Some(index));
        let expected = vec![
            (index_partition_key(index).to_owned(), KeyType::Hash),
            ("run_id".to_owned(), KeyType::Range),
        ];
        if found.is_none_or(|found| keys(found.key_schema()) != expected) {
            return Err(foreign(format!(
                "it has no global secondary index `{index}` on `{}` and `run_id`",
                index_partition_key(index)
            )));
        }
    }
    Ok(())
}
