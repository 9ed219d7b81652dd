//! Which agent runs which check: rendezvous hashing for AnyNode, every agent for EveryNode.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

use vigil_proto::CheckSpec;

use crate::resource::Placement;

/// A connected agent as placement sees it.
#[derive(Clone, Debug)]
pub struct AgentInfo {
    pub agent_id: String,
    pub node: String,
    pub node_labels: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
}

/// A check ready to place.
#[derive(Clone, Debug)]
pub struct Placeable {
    pub spec: CheckSpec,
    pub placement: Placement,
    pub node_selector: BTreeMap<String, String>,
}

/// The outcome of placement: each agent's checks, and why any check runs nowhere.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub per_agent: HashMap<String, Vec<CheckSpec>>,
    /// check id -> agent ids it was placed on
    pub placed_on: HashMap<String, Vec<String>>,
    /// check id -> why it runs nowhere
    pub unplaced: HashMap<String, String>,
}

/// Places every check onto the agents. Hashing is on the node name, so an agent that restarts
/// on the same node gets its checks back, and an agent that leaves moves only its own checks.
pub fn place(checks: &[Placeable], agents: &[AgentInfo]) -> Plan {
    let mut plan = Plan::default();
    for agent in agents {
        plan.per_agent.entry(agent.agent_id.clone()).or_default();
    }
    for check in checks {
        let id = &check.spec.id;
        let kind = check.spec.probe.as_ref().map_or("none", |p| p.kind());
        let capability = format!("probe/{kind}");
        if check.placement == Placement::Isolated {
            plan.unplaced.insert(
                id.clone(),
                "placement Isolated runs each run as a Kubernetes Job, only in run mode".into(),
            );
            continue;
        }
        let able: Vec<&AgentInfo> = agents
            .iter()
            .filter(|a| a.capabilities.contains(&capability))
            .collect();
        if able.is_empty() {
            let why = if agents.is_empty() {
                "no agent is connected".to_owned()
            } else {
                format!("no connected agent supports {kind} probes")
            };
            plan.unplaced.insert(id.clone(), why);
            continue;
        }
        let chosen: Vec<&AgentInfo> = match check.placement {
            Placement::AnyNode => {
                let key = format!("{id}\0{}", check.spec.target);
                able.into_iter()
                    .max_by_key(|a| (score(&key, &a.node), a.agent_id.clone()))
                    .into_iter()
                    .collect()
            }
            Placement::EveryNode => able,
            Placement::NodeSelector => able
                .into_iter()
                .filter(|a| {
                    check
                        .node_selector
                        .iter()
                        .all(|(k, v)| a.node_labels.get(k) == Some(v))
                })
                .collect(),
            Placement::Isolated => unreachable!("handled above"),
        };
        if chosen.is_empty() {
            plan.unplaced.insert(
                id.clone(),
                "no connected agent's node matches spec.nodeSelector".into(),
            );
            continue;
        }
        for agent in &chosen {
            plan.per_agent
                .entry(agent.agent_id.clone())
                .or_default()
                .push(check.spec.clone());
        }
        plan.placed_on.insert(
            id.clone(),
            chosen.iter().map(|a| a.agent_id.clone()).collect(),
        );
    }
    plan
}

fn score(key: &str, node: &str) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    node.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::{TcpProbe, check_spec::Probe};

    fn agent(n: usize) -> AgentInfo {
        AgentInfo {
            agent_id: format!("agent-{n}"),
            node: format!("node-{n}"),
            node_labels: BTreeMap::new(),
            capabilities: vec!["probe/tcp".into(), "probe/http".into()],
        }
    }

    fn check(n: usize, placement: Placement) -> Placeable {
        Placeable {
            spec: CheckSpec {
                id: format!("ns/c{n}"),
                target: format!("10.0.0.{n}:80"),
                probe: Some(Probe::Tcp(TcpProbe {
                    address: format!("10.0.0.{n}:80"),
                    ..Default::default()
                })),
                ..Default::default()
            },
            placement,
            node_selector: BTreeMap::new(),
        }
    }

    #[test]
    fn any_node_runs_once_and_moves_only_the_leavers_checks() {
        let checks: Vec<_> = (0..200).map(|n| check(n, Placement::AnyNode)).collect();
        let agents: Vec<_> = (0..5).map(agent).collect();
        let before = place(&checks, &agents);
        assert!(before.placed_on.values().all(|a| a.len() == 1));
        let per: Vec<usize> = agents
            .iter()
            .map(|a| before.per_agent[&a.agent_id].len())
            .collect();
        assert!(per.iter().all(|&n| n > 15), "spread over agents: {per:?}");

        let after = place(&checks, &agents[..4]);
        for (id, on) in &before.placed_on {
            if on[0] != "agent-4" {
                assert_eq!(
                    &after.placed_on[id], on,
                    "{id} moved though its agent stayed"
                );
            }
        }
    }

    #[test]
    fn every_node_runs_everywhere_and_capabilities_filter() {
        let mut agents: Vec<_> = (0..3).map(agent).collect();
        agents[2].capabilities = vec!["probe/http".into()];
        let plan = place(&[check(1, Placement::EveryNode)], &agents);
        assert_eq!(plan.placed_on["ns/c1"], ["agent-0", "agent-1"]);
        let plan = place(&[check(1, Placement::AnyNode)], &agents[2..]);
        assert_eq!(
            plan.unplaced["ns/c1"],
            "no connected agent supports tcp probes"
        );
        let plan = place(&[check(1, Placement::AnyNode)], &[]);
        assert_eq!(plan.unplaced["ns/c1"], "no agent is connected");
    }
}
