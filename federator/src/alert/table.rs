//! The notifier task's table of firing and recently resolved alerts: applies transitions,
//! reconciles with the live state every resend interval, tracks silent agents, and queues what
//! changed for every Alertmanager.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::model::{self, Alert, LastResult};
use super::sender::{self, MAX_BATCH};
use super::{Config, ENDS_AT_INTERVALS, Event, RESOLVED_RESEND_FOR, node};
use crate::federation::ClusterSilence;
use crate::hub::{CheckDef, Hub, now_unix_nanos};
use crate::metrics::Metrics;
use crate::record::rfc3339;
use crate::state::{Health, State, StateKey, is_agent_owned};

/// One alert the notifier knows of.
struct Tracked {
    alert: Alert,
    /// When it recovered (Unix nanoseconds); `None` while firing.
    resolved_at: Option<i64>,
    kind: Kind,
}

/// What an alert is about.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// A HealthCheck's target: `HealthCheckFailing`.
    Check,
    /// A node diagnostic with this problem class: `NodeProblem`.
    Node(String),
    /// An agent (`VigilAgentSilent`, the key's target is the agent id) or a cluster
    /// (`VigilClusterSilent`, no target): fired and resolved by silence, not by state.
    Silence,
}

/// The firing and recently resolved alerts, owned by the notifier task.
pub(super) struct Table {
    config: Config,
    hub: Arc<Hub>,
    state: Arc<State>,
    metrics: Arc<Metrics>,
    queues: Vec<Arc<sender::Queue>>,
    alerts: HashMap<StateKey, Tracked>,
    dropped_events: Arc<AtomicU64>,
    silence: node::Silence,
}

impl Table {
    pub(super) fn new(
        config: Config,
        hub: Arc<Hub>,
        state: Arc<State>,
        metrics: Arc<Metrics>,
        queues: Vec<Arc<sender::Queue>>,
        dropped_events: Arc<AtomicU64>,
    ) -> Self {
        Self {
            silence: node::Silence::new(config.agent_silent_after),
            config,
            hub,
            state,
            metrics,
            queues,
            alerts: HashMap::new(),
            dropped_events,
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Event>, cancel: CancellationToken) {
        let mut resend = tokio::time::interval(self.config.resend_interval);
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resend.tick().await;
        let mut silence = tokio::time::interval(self.silence.poll_every());
        silence.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut events = Vec::new();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                n = rx.recv_many(&mut events, MAX_BATCH) => {
                    if n == 0 {
                        return;
                    }
                    self.apply(events.drain(..));
                }
                _ = resend.tick() => self.resend_all(),
                _ = silence.tick() => self.check_silence(),
            }
        }
    }

    fn checks(&self) -> HashMap<String, CheckDef> {
        self.hub
            .checks()
            .into_iter()
            .map(|d| (d.spec.id.clone(), d))
            .collect()
    }

    /// Records transitions and queues the alerts they change.
    fn apply(&mut self, events: impl Iterator<Item = Event>) {
        let checks = self.checks();
        let mut targets: HashMap<String, Vec<crate::state::TargetState>> = HashMap::new();
        let mut changed = Vec::new();
        for Event {
            transition: t,
            last,
        } in events
        {
            if t.to == Health::Failing {
                let def = checks.get(&t.key.check);
                let agent_owned = is_agent_owned(&t.key.check);
                if def.is_none() && !agent_owned {
                    continue;
                }
                let states = targets
                    .entry(t.key.check.clone())
                    .or_insert_with(|| self.state.targets(&t.key.check));
                let starts_at = states
                    .iter()
                    .find(|s| s.key == t.key)
                    .and_then(|s| s.failing_since_unix_nanos)
                    .filter(|since| *since <= t.at_unix_nanos)
                    .unwrap_or(t.at_unix_nanos);
                let Some(tracked) = self.fire(&t.key, def, last, starts_at) else {
                    continue; // a node diagnostic that could not tell: no problem class
                };
                tracing::info!(alertname = %tracked.alert.labels["alertname"], check = %t.key.check, target = %t.key.target, node = %t.key.node, cluster = %t.key.cluster, "alert firing");
                self.alerts.insert(t.key.clone(), tracked);
                changed.push(t.key);
            } else if let Some(tracked) = self.alerts.get_mut(&t.key)
                && tracked.resolved_at.is_none()
            {
                tracked.resolved_at = Some(t.at_unix_nanos);
                tracing::info!(check = %t.key.check, target = %t.key.target, node = %t.key.node, cluster = %t.key.cluster, "alert resolved");
                changed.push(t.key);
            }
        }
        self.send(changed);
    }

    /// The alert of a failing check target (`def`) or node diagnostic (no `def`); `None` for a
    /// node diagnostic without a problem class.
    fn fire(
        &self,
        key: &StateKey,
        def: Option<&CheckDef>,
        mut last: LastResult,
        starts_at: i64,
    ) -> Option<Tracked> {
        let url = &self.config.external_url;
        let (alert, kind) = match def {
            Some(def) if !is_agent_owned(&key.check) => {
                last.deep_check = self.config.deep_checks.describe_since(key, starts_at);
                (model::build(key, def, &last, starts_at, url), Kind::Check)
            }
            _ => {
                let problem = last.problem.clone()?;
                let alert = node::node_problem(key, &problem, &last, starts_at, url);
                (alert, Kind::Node(problem))
            }
        };
        Some(Tracked {
            alert,
            resolved_at: None,
            kind,
        })
    }

    /// Fires and resolves VigilAgentSilent from the agents connected now, and
    /// VigilClusterSilent for clusters that forward here.
    fn check_silence(&mut self) {
        let changes = self.silence.observe(
            &self.hub.agents(),
            &self.hub.departed_agents(),
            now_unix_nanos(),
        );
        let mut changed = Vec::new();
        for c in changes {
            match c {
                node::SilenceChange::Fire {
                    key,
                    gone_unix_nanos,
                } => {
                    tracing::warn!(agent = %key.target, node = %key.node, cluster = %key.cluster, "agent silent; alert firing");
                    let alert = node::agent_silent(
                        &key,
                        gone_unix_nanos,
                        self.silence.after(),
                        &self.config.external_url,
                    );
                    changed.push(self.fire_silence(key, alert));
                }
                node::SilenceChange::Resolve { key } => {
                    if self.resolve_silence(&key) {
                        tracing::info!(agent = %key.target, node = %key.node, cluster = %key.cluster, "agent back; alert resolved");
                        changed.push(key);
                    }
                }
            }
        }
        if let Some(federation) = self.config.federation.clone() {
            for c in federation.silence() {
                match c {
                    ClusterSilence::Fire {
                        cluster,
                        last_seen_unix_nanos,
                    } => {
                        tracing::warn!(%cluster, "cluster silent; alert firing");
                        let alert = node::cluster_silent(
                            &cluster,
                            last_seen_unix_nanos,
                            federation.silent_after(),
                            &self.config.external_url,
                        );
                        changed.push(self.fire_silence(node::cluster_silent_key(&cluster), alert));
                    }
                    ClusterSilence::Resolve { cluster } => {
                        let key = node::cluster_silent_key(&cluster);
                        if self.resolve_silence(&key) {
                            tracing::info!(%cluster, "cluster heard from again; alert resolved");
                            changed.push(key);
                        }
                    }
                }
            }
        }
        self.send(changed);
    }

    /// Starts tracking a silence alert; returns its key for sending.
    fn fire_silence(&mut self, key: StateKey, alert: Alert) -> StateKey {
        self.alerts.insert(
            key.clone(),
            Tracked {
                alert,
                resolved_at: None,
                kind: Kind::Silence,
            },
        );
        key
    }

    /// Resolves a firing silence alert; false when it was not firing.
    fn resolve_silence(&mut self, key: &StateKey) -> bool {
        match self.alerts.get_mut(key) {
            Some(t) if t.resolved_at.is_none() => {
                t.resolved_at = Some(now_unix_nanos());
                true
            }
            _ => false,
        }
    }

    /// Reconciles with the live state, forgets old resolved alerts and queues everything.
    fn resend_all(&mut self) {
        let missed = self.dropped_events.swap(0, Ordering::Relaxed);
        if missed > 0 {
            tracing::warn!(
                missed,
                "the alert notifier fell behind; missed state changes are corrected now"
            );
        }
        let now = now_unix_nanos();
        let checks = self.checks();
        let live: HashMap<StateKey, crate::state::TargetState> = self
            .state
            .all_targets()
            .into_iter()
            .map(|t| (t.key.clone(), t))
            .collect();
        let deep_checks = Arc::clone(&self.config.deep_checks);
        for (key, tracked) in &mut self.alerts {
            if tracked.resolved_at.is_some() || tracked.kind == Kind::Silence {
                continue;
            }
            match live.get(key) {
                Some(t) if t.state == Health::Failing => {
                    let mut last = LastResult::of_record(&t.last);
                    match (&tracked.kind, checks.get(&key.check)) {
                        (Kind::Node(problem), _) => {
                            node::set_node_annotations(&mut tracked.alert, key, problem, &last);
                        }
                        (_, Some(def)) => {
                            let since = t.failing_since_unix_nanos.unwrap_or(t.since_unix_nanos);
                            last.deep_check = deep_checks.describe_since(key, since);
                            model::set_annotations(&mut tracked.alert, key, def, &last);
                        }
                        _ => {}
                    }
                }
                Some(t) if t.state == Health::Healthy => {
                    tracked.resolved_at = Some(t.since_unix_nanos)
                }
                // The check, or this target of it, is gone.
                _ => tracked.resolved_at = Some(now),
            }
        }
        for (key, t) in &live {
            let firing = self
                .alerts
                .get(key)
                .is_some_and(|a| a.resolved_at.is_none());
            if t.state != Health::Failing || firing {
                continue;
            }
            let def = checks.get(&key.check);
            if def.is_none() && !is_agent_owned(&key.check) {
                continue;
            }
            let starts_at = t.failing_since_unix_nanos.unwrap_or(t.since_unix_nanos);
            if let Some(tracked) = self.fire(key, def, LastResult::of_record(&t.last), starts_at) {
                self.alerts.insert(key.clone(), tracked);
            }
        }
        let keep_for = i64::try_from(RESOLVED_RESEND_FOR.as_nanos()).unwrap_or(i64::MAX);
        self.alerts
            .retain(|_, a| a.resolved_at.is_none_or(|at| now - at < keep_for));
        let keys: Vec<StateKey> = self.alerts.keys().cloned().collect();
        self.send(keys);
    }

    /// Stamps `endsAt` on the alerts of `keys` and queues them for every Alertmanager.
    fn send(&self, keys: Vec<StateKey>) {
        let firing = self
            .alerts
            .values()
            .filter(|a| a.resolved_at.is_none())
            .count();
        self.metrics.alerts_firing.set(firing as i64);
        if keys.is_empty() {
            return;
        }
        let ahead = self.config.resend_interval * ENDS_AT_INTERVALS;
        let firing_ends_at = rfc3339(
            now_unix_nanos().saturating_add(i64::try_from(ahead.as_nanos()).unwrap_or(i64::MAX)),
        );
        let batch: Vec<(StateKey, Alert)> = keys
            .into_iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .filter_map(|key| {
                let tracked = self.alerts.get(&key)?;
                let mut alert = tracked.alert.clone();
                alert.ends_at = match tracked.resolved_at {
                    Some(at) => rfc3339(at),
                    None => firing_ends_at.clone(),
                };
                Some((key, alert))
            })
            .collect();
        for q in &self.queues {
            let dropped = q.push(batch.iter().cloned());
            if dropped > 0 {
                tracing::warn!(alertmanager = %q.name, dropped, "alert queue full; dropped alerts are sent again at the next resend");
            }
        }
    }
}
