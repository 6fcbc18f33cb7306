//! The comparison: the actions the code needs against the actions `iam/` grants. Every needed
//! action is granted or withheld for a reason that still holds; every granted action is
//! needed or listed with its reason; `"Resource": "*"` only where an action takes no
//! resource. IAM compares action names without regard to case, and so does this.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::calls::{Needs, needed_actions};
use crate::catalog::Catalog;
use crate::exceptions::{ACCOUNT_WIDE, GRANTED_WITHOUT_A_CALL, WITHHELD};
use crate::policy::{self, Grant};
use crate::sources::Sources;

/// What the code needs, everything wrong between it and the policies (empty: they agree),
/// and where they differ for a listed reason.
pub struct Outcome {
    pub needs: BTreeMap<String, Vec<String>>,
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

pub fn compare(root: &Path, sources: &Sources, catalog: &Catalog) -> Outcome {
    let Needs {
        actions,
        mut problems,
        mut notes,
    } = needed_actions(sources, catalog);
    let grants = match policy::grants(root) {
        Ok(grants) => grants,
        Err(found) => {
            problems.extend(found);
            return Outcome {
                needs: actions,
                problems,
                notes,
            };
        }
    };
    let key = |action: &str| action.to_ascii_lowercase();
    let needed: BTreeSet<String> = actions.keys().map(|action| key(action)).collect();
    let mut granted: BTreeMap<String, Vec<&Grant>> = BTreeMap::new();
    for grant in &grants {
        granted.entry(key(&grant.action)).or_default().push(grant);
    }

    for (action, sites) in &actions {
        if granted.contains_key(&key(action)) {
            continue;
        }
        match WITHHELD.iter().find(|withheld| key(withheld.action) == key(action)) {
            Some(withheld) => {
                notes.push(format!(
                    "{action}: called at {}, not granted: {}",
                    sites.join(", "),
                    withheld.reason
                ));
                if let Err(why) = (withheld.still_holds)(root, sources) {
                    problems.push(format!(
                        "{action} is left out of the policies because {}, but {why}",
                        withheld.reason
                    ));
                }
            }
            None => problems.push(format!(
                "{action} is called at {} but no policy in iam/ allows it: add it, on the resources it acts on, to the one of {} for that part of a run",
                sites.join(", "),
                policy::PERMISSION_POLICIES.join(", ")
            )),
        }
    }
    for withheld in WITHHELD {
        if !needed.contains(&key(withheld.action)) {
            problems.push(format!(
                "WITHHELD lists {}, which no code calls any more: remove the entry",
                withheld.action
            ));
        }
        if granted.contains_key(&key(withheld.action)) {
            problems.push(format!(
                "{} is both granted and listed in WITHHELD: remove one",
                withheld.action
            ));
        }
    }

    for (action, statements) in &granted {
        let listed = GRANTED_WITHOUT_A_CALL
            .iter()
            .find(|entry| key(entry.action) == *action);
        let names: Vec<&str> = statements
            .iter()
            .map(|grant| grant.statement.as_str())
            .collect();
        if let Some(entry) = listed {
            notes.push(format!(
                "{} ({}): granted, no SDK call: {}",
                entry.action,
                names.join(", "),
                entry.reason
            ));
        }
        let listed = listed.is_some();
        if !needed.contains(action) && !listed {
            problems.push(format!(
                "{} ({}) grants `{}`, which no code calls: remove it, or list it in GRANTED_WITHOUT_A_CALL in tests/iam_policy/exceptions.rs with the reason a run needs it",
                names.join(", "),
                statements[0].action,
                statements[0].action
            ));
        }
        if needed.contains(action) && listed {
            problems.push(format!(
                "{action} is called by the code and also in GRANTED_WITHOUT_A_CALL: remove the entry"
            ));
        }
    }
    for entry in GRANTED_WITHOUT_A_CALL {
        if !granted.contains_key(&key(entry.action)) {
            problems.push(format!(
                "GRANTED_WITHOUT_A_CALL lists {}, which no policy grants: remove the entry",
                entry.action
            ));
        }
    }

    for grant in &grants {
        let account_wide = ACCOUNT_WIDE
            .iter()
            .any(|action| key(action) == key(&grant.action));
        if grant.resources.iter().any(|resource| resource == "*") && !account_wide {
            problems.push(format!(
                "{} allows {} on every resource: name its resources (ARNs with placeholders)",
                grant.statement, grant.action
            ));
        }
    }
    Outcome {
        needs: actions,
        problems,
        notes,
    }
}
