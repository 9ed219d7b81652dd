//! The agent's identity in its spill directory (`agent-state.json`): the agent id, the seq
//! reserved up to, and the last acknowledged seq, so that a restarted agent continues the same
//! (agent, seq) space.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SpillError;

/// Name of the state file inside the spill directory.
pub const FILE: &str = "agent-state.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentState {
    /// The id this agent's results carry; kept across restarts.
    pub agent_id: String,
    /// Every seq handed out so far is below this; a restarted agent continues from here.
    pub next_seq: u64,
    /// Highest seq the federator acknowledged (sent as `Hello.last_acked_seq` after a restart).
    pub acked_seq: u64,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The stored state, or `None` in a directory no agent has used yet.
pub fn load(dir: &Path) -> Result<Option<AgentState>, SpillError> {
    let path = path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SpillError::ReadState { path, source }),
    };
    let bad = |reason: String| SpillError::BadState {
        path: path.clone(),
        reason,
    };
    let state: AgentState = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if state.agent_id.is_empty()
        || state.agent_id.len() > 253
        || state.agent_id.chars().any(char::is_control)
    {
        return Err(bad(format!(
            "agentId must be 1-253 printable characters (got {:?})",
            state.agent_id
        )));
    }
    if state.acked_seq >= state.next_seq {
        return Err(bad(format!(
            "ackedSeq {} must be below nextSeq {}",
            state.acked_seq, state.next_seq
        )));
    }
    Ok(Some(state))
}

/// Replaces the state file atomically (write a temporary file, rename it over the old one).
/// `durable` also syncs the file and the directory, so the state survives a power loss; the
/// seq reservation needs that, the acknowledged position does not.
pub fn store(dir: &Path, state: &AgentState, durable: bool) -> Result<(), SpillError> {
    let path = path(dir);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(state).expect("state serializes"))?;
        f.write_all(b"\n")?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        if durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|source| SpillError::WriteState { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let s = AgentState {
            agent_id: "node-a-0000beef".into(),
            next_seq: 20_000,
            acked_seq: 12_345,
        };
        store(dir.path(), &s, true).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(s));

        for (text, want) in [
            ("{not json", "agent-state.json is not valid"),
            (
                r#"{"agentId":"a","nextSeq":1,"ackedSeq":0,"extra":1}"#,
                "unknown field `extra`",
            ),
            (
                r#"{"agentId":"","nextSeq":1,"ackedSeq":0}"#,
                "agentId must be 1-253 printable characters",
            ),
            (
                r#"{"agentId":"a","nextSeq":5,"ackedSeq":5}"#,
                "ackedSeq 5 must be below nextSeq 5",
            ),
        ] {
            std::fs::write(path(dir.path()), text).unwrap();
            let err = load(dir.path()).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.contains("delete it"), "says how to fix: {err}");
        }
    }
}
