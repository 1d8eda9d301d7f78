//! `[[consumer_groups]]`: the groups the configuration file declares, and their check, by the
//! same rules as the API (`name.rs`).

use serde::Deserialize;

use super::{name, DEFAULT_GROUP};
use crate::check::{index, Problem, Seen};

/// Groups at most by default (`[amqp] max_consumer_groups`), `DEFAULT_GROUP` included: the
/// modelled platform's limit.
pub const DEFAULT_MAX_GROUPS: usize = 1000;

/// `[[consumer_groups]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerGroupConfig {
    /// Consumer group id, used in AMQP usernames.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Deliveries of a message at most; after the last one is not accepted the message goes to
    /// the dead letters instead of coming back. Absent: no limit, as the modelled platform.
    #[serde(default)]
    pub max_delivery_attempts: Option<u32>,
}

/// Every problem of `[[consumer_groups]]`, at paths relative to the array (`[1].id`): ids and
/// names by the API's rules, unique, and neither the id nor the name of `DEFAULT_GROUP`, which
/// always exists.
pub fn check_groups(groups: &[ConsumerGroupConfig]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut ids = Seen::default();
    let mut names = Seen::default();
    for (g, group) in groups.iter().enumerate() {
        let id = group.id.as_str();
        let id_problem = if id == DEFAULT_GROUP {
            Some(
                "must not be DEFAULT_GROUP, which always exists implicitly; remove this entry or choose \
                 another id"
                    .to_string(),
            )
        } else if let Err(message) = name::validate_id(id) {
            Some(message)
        } else {
            ids.first(id, g).map(|first| {
                format!("\"{id}\" is already used by consumer_groups[{first}]; ids must be unique")
            })
        };
        problems.extend(id_problem.map(|message| Problem::new(index(g).key("id"), message)));

        let group_name = group.name.as_str();
        let name_problem = if group_name == DEFAULT_GROUP {
            Some("\"DEFAULT_GROUP\" is the name of DEFAULT_GROUP; names must be unique".to_string())
        } else if let Err(message) = name::validate(group_name) {
            Some(message)
        } else {
            names.first(group_name, g).map(|first| {
                format!("\"{group_name}\" is already used by consumer_groups[{first}]; names must be unique")
            })
        };
        problems.extend(name_problem.map(|message| Problem::new(index(g).key("name"), message)));
        if group.max_delivery_attempts == Some(0) {
            problems.push(Problem::new(
                index(g).key("max_delivery_attempts"),
                "must be at least 1; leave it out for no limit".to_string(),
            ));
        }
    }
    problems
}
