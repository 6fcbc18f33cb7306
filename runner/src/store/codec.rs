//! How both stores write records as JSON: the run record without the fields each keeps on
//! its own (status, finish time, stages), whole records, and status enums as their names.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::run::RunRecord;

/// Run record fields a store keeps outside the run's JSON (in columns, attributes or stage
/// rows and items: they change after creation), so that there is one copy of each.
pub(super) const FIELDS_OUTSIDE_RECORD_JSON: [&str; 3] = ["status", "finished_at", "stages"];

/// The run as JSON without [`FIELDS_OUTSIDE_RECORD_JSON`].
pub(super) fn run_record_json(run: &RunRecord) -> String {
    let mut value = serde_json::to_value(run).expect("run records serialize to JSON");
    if let Some(object) = value.as_object_mut() {
        for field in FIELDS_OUTSIDE_RECORD_JSON {
            object.remove(field);
        }
    }
    value.to_string()
}

/// Records are plain data with string keys, which serde_json always serializes.
pub(super) fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("store records serialize to JSON")
}

/// A record read back, or what is wrong with the JSON.
pub(super) fn from_json<T: DeserializeOwned>(json: &str) -> Result<T, String> {
    serde_json::from_str(json).map_err(|error| error.to_string())
}

/// A status enum's name as it appears in JSON output, which is also how columns and item
/// attributes store it.
pub(super) fn enum_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        _ => unreachable!("status enums serialize to their snake_case name"),
    }
}

/// A status enum from its stored name.
pub(super) fn enum_from_name<T: DeserializeOwned>(name: &str) -> Option<T> {
    serde_json::from_value(Value::String(name.to_owned())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{RunStatus, sample};

    #[test]
    fn the_run_json_leaves_out_what_is_kept_elsewhere_and_names_read_back() {
        let mut run = sample::run(RunStatus::Waiting, Vec::new());
        run.finished_at = Some("2026-12-01T09:10:00Z".into());
        let json: Value = serde_json::from_str(&run_record_json(&run)).unwrap();
        for field in FIELDS_OUTSIDE_RECORD_JSON {
            assert!(json.get(field).is_none(), "{field} in {json}");
        }
        assert_eq!(json["pipeline"], "api");
        assert_eq!(enum_name(&RunStatus::Waiting), "waiting");
        assert_eq!(
            enum_from_name::<RunStatus>("waiting"),
            Some(RunStatus::Waiting)
        );
        assert_eq!(enum_from_name::<RunStatus>("paused"), None);
        assert!(from_json::<RunRecord>("{").is_err());
    }
}
