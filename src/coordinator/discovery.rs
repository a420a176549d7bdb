//! How coordinators started with the original design's spelling find each other:
//! `--coordinator-id coordinator1 --coordinator-addresses host:8081,host:8082` names this node
//! and lists the others (or all of them), but not their ids. Each node asks every listed
//! address who answers there (`Control.Status`: its Raft id and a per-process `instance`
//! number), until every address answered; an address that answers with this very process is
//! this node's own. Then the members are known — the ids as the nodes state them, the
//! addresses as listed — and, as with `--peers`, the lowest id initialises the cluster with
//! all of them. Two coordinators claiming the same id are refused with both addresses, never
//! initialised.
//!
//! [`members`] is the pure part: the answers in, the members or what is missing out.
//!
//! A node started with `--join` is the other way in: [`wait_to_be_added`] only says, until
//! an operator added it, which cluster it waits for and the command that adds it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::Coordinator;

/// How often an unanswered address is asked again.
const RETRY: Duration = Duration::from_millis(300);

/// How often a node still waiting says so in its log.
const REMIND: Duration = Duration::from_secs(10);

/// Who answered at one listed address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub node_id: u64,
    pub instance: u64,
}

/// What the answers say so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// Every address answered: the members by id (this node at `own`).
    Members(BTreeMap<u64, String>),
    /// These addresses have not answered yet.
    Waiting(Vec<String>),
    /// Two processes claim one id: never start a cluster like that.
    Conflict(String),
}

/// The members, given this node's id, instance and the address other nodes reach it at when
/// the list does not hold it (`advertised`), and the answers by listed address.
pub fn members(
    me: Answer,
    advertised: &str,
    listed: &[String],
    answers: &BTreeMap<String, Answer>,
) -> Found {
    let waiting: Vec<String> = listed
        .iter()
        .filter(|a| !answers.contains_key(*a))
        .cloned()
        .collect();
    let mut by_id: BTreeMap<u64, (String, u64)> = BTreeMap::new();
    for (addr, answer) in answers {
        if answer.node_id == me.node_id && answer.instance != me.instance {
            return Found::Conflict(format!(
                "the coordinator at {addr} also calls itself node {}; give each coordinator its \
                 own --coordinator-id",
                me.node_id
            ));
        }
        if let Some((other, instance)) = by_id.get(&answer.node_id)
            && *instance != answer.instance
        {
            return Found::Conflict(format!(
                "the coordinators at {other} and {addr} both call themselves node {}; give each \
                 its own --coordinator-id",
                answer.node_id
            ));
        }
        by_id.insert(answer.node_id, (addr.clone(), answer.instance));
    }
    if !waiting.is_empty() {
        return Found::Waiting(waiting);
    }
    let mut members: BTreeMap<u64, String> = by_id
        .into_iter()
        .map(|(id, (addr, _))| (id, addr))
        .collect();
    members
        .entry(me.node_id)
        .or_insert_with(|| advertised.to_string());
    Found::Members(members)
}

/// Asks every listed address until all answered, then initialises the cluster if this node
/// has the lowest id. Runs in the background from [`Coordinator::start`].
pub async fn discover(node: Arc<Coordinator>, advertised: String) {
    let listed = node.config().discover.clone();
    let me = Answer {
        node_id: node.node_id(),
        instance: node.instance(),
    };
    let mut answers: BTreeMap<String, Answer> = BTreeMap::new();
    let mut last_said = tokio::time::Instant::now() - REMIND;
    loop {
        if node.raft().is_initialized().await.unwrap_or(false) {
            return; // another node's initialisation reached this one
        }
        for addr in &listed {
            if answers.contains_key(addr) {
                continue;
            }
            if let Some(answer) = ask(&node, addr).await {
                answers.insert(addr.clone(), answer);
            }
        }
        match members(me, &advertised, &listed, &answers) {
            Found::Members(members) => {
                tracing::info!(?members, "every listed coordinator answered");
                if let Err(e) = node.initialize_with(members).await {
                    tracing::error!("cannot initialise the cluster: {e}");
                }
                return;
            }
            Found::Waiting(missing) => {
                if last_said.elapsed() >= REMIND {
                    tracing::info!(
                        waiting_for = %missing.join(", "),
                        "waiting for the other coordinators to answer before starting the cluster"
                    );
                    last_said = tokio::time::Instant::now();
                }
            }
            Found::Conflict(problem) => {
                if last_said.elapsed() >= REMIND {
                    tracing::error!("{problem}");
                    last_said = tokio::time::Instant::now();
                }
                answers.clear(); // ask again: one of them may be restarted with another id
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn ask(node: &Coordinator, addr: &str) -> Option<Answer> {
    let reply = node.peer_status(addr, Duration::from_secs(2)).await.ok()?;
    Some(Answer {
        node_id: reply.node_id,
        instance: reply.instance,
    })
}

/// Until this node is a member, says every 10 s which cluster it waits for and how to
/// add it.
pub async fn wait_to_be_added(node: Arc<Coordinator>, advertised: String) {
    let join = node.config().join_addresses();
    loop {
        if node.raft().is_initialized().await.unwrap_or(false) {
            tracing::info!("this node was added to the cluster");
            return;
        }
        let mut leader = None;
        for addr in &join {
            if let Ok(status) = node.peer_status(addr, Duration::from_secs(2)).await
                && let Some(id) = status.leader_id
            {
                leader = Some((id, status.leader_addr));
                break;
            }
        }
        match leader {
            Some((id, addr)) => tracing::info!(
                "waiting to be added to the cluster led by node {id} at {addr}: run `testfleet \
                 cluster add-node {} {advertised} --coordinator {addr}`",
                node.node_id()
            ),
            None => tracing::warn!(
                "waiting to be added to a cluster, but no member at {} answers with a leader",
                join.join(", ")
            ),
        }
        tokio::time::sleep(REMIND).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Answer = Answer {
        node_id: 1,
        instance: 77,
    };

    fn list(addrs: &[&str]) -> Vec<String> {
        addrs.iter().map(|a| a.to_string()).collect()
    }

    fn answered(pairs: &[(&str, u64, u64)]) -> BTreeMap<String, Answer> {
        pairs
            .iter()
            .map(|(a, id, instance)| {
                (
                    a.to_string(),
                    Answer {
                        node_id: *id,
                        instance: *instance,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_list_of_the_others_adds_this_node_at_its_advertised_address() {
        let listed = list(&["h:8081", "h:8082"]);
        let answers = answered(&[("h:8081", 2, 5), ("h:8082", 3, 6)]);
        let Found::Members(members) = members(ME, "h:8080", &listed, &answers) else {
            panic!("not complete");
        };
        assert_eq!(
            members,
            BTreeMap::from([
                (1, "h:8080".to_string()),
                (2, "h:8081".to_string()),
                (3, "h:8082".to_string()),
            ])
        );
    }

    #[test]
    fn a_list_of_all_finds_this_node_by_its_own_answer() {
        let listed = list(&["h:8080", "h:8081"]);
        let answers = answered(&[("h:8080", 1, 77), ("h:8081", 2, 5)]);
        let Found::Members(members) = members(ME, "127.0.0.1:8080", &listed, &answers) else {
            panic!("not complete");
        };
        // Its address as the list writes it, which is how the others reach it.
        assert_eq!(members[&1], "h:8080");
        assert_eq!(members.len(), 2);
    }

    #[test]
    fn silent_addresses_are_waited_for() {
        let listed = list(&["h:8081", "h:8082"]);
        let answers = answered(&[("h:8081", 2, 5)]);
        assert_eq!(
            members(ME, "h:8080", &listed, &answers),
            Found::Waiting(vec!["h:8082".into()])
        );
    }

    #[test]
    fn two_processes_with_one_id_are_refused() {
        let listed = list(&["h:8081", "h:8082"]);
        let same_as_me = answered(&[("h:8081", 1, 5), ("h:8082", 3, 6)]);
        let Found::Conflict(problem) = members(ME, "h:8080", &listed, &same_as_me) else {
            panic!("not refused");
        };
        assert!(
            problem.contains("h:8081 also calls itself node 1"),
            "{problem}"
        );

        let twins = answered(&[("h:8081", 2, 5), ("h:8082", 2, 6)]);
        let Found::Conflict(problem) = members(ME, "h:8080", &listed, &twins) else {
            panic!("not refused");
        };
        assert!(
            problem.contains("h:8081 and h:8082 both call themselves node 2"),
            "{problem}"
        );
    }
}
