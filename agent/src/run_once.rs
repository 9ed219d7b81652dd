//! `vigil-agent run-once`: one run of one check, reported over the `Report` RPC, for the
//! Kubernetes Jobs of `placement: Isolated` checks. The federator passes the CheckSpec as hex
//! protobuf (`--spec` / `VIGIL_CHECK_SPEC`), so the Job needs no access to the API server.

use std::time::Duration;

use prost::Message;
use vigil_proto::{CheckSpec, ResultBatch, federator_client::FederatorClient};

use crate::{Identity, probe, scheduler};

#[derive(Debug, thiserror::Error)]
pub enum RunOnceError {
    #[error("--spec is not hex: {0}; pass the CheckSpec as the federator writes it into the Job")]
    Hex(String),
    #[error("--spec does not decode as a vigil.v1.CheckSpec: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("cannot report to the federator at {url} after {attempts} attempts: {last}")]
    Report {
        url: String,
        attempts: u32,
        last: String,
    },
}

/// Lower-case hex of `bytes` (the form `--spec` takes).
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Result<Vec<u8>, RunOnceError> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return Err(RunOnceError::Hex(format!("odd length {}", text.len())));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16)
                .map_err(|_| RunOnceError::Hex(format!("bad digits {:?} at {i}", &text[i..i + 2])))
        })
        .collect()
}

/// Decodes a hex CheckSpec.
pub fn decode_spec(hex: &str) -> Result<CheckSpec, RunOnceError> {
    Ok(CheckSpec::decode(from_hex(hex)?.as_slice())?)
}

/// Runs the check once and reports the result as seq 1 of `identity.agent_id` (a Job's own
/// id, so every run is its own `(agent, seq)`). Returns the outcome's name.
pub async fn run(
    federator: &str,
    spec: &CheckSpec,
    identity: &Identity,
) -> Result<&'static str, RunOnceError> {
    let built = probe::build(spec);
    let mut result = scheduler::run_check(spec, &built, identity).await;
    result.seq = 1;
    result.agent_id = identity.agent_id.clone();
    result.node = identity.node.clone();
    let outcome = result.outcome().name();
    tracing::info!(check = %spec.id, outcome, reason = %result.reason, "ran once");
    let batch = ResultBatch {
        results: vec![result],
        agent_id: identity.agent_id.clone(),
        batch_seq: 0,
    };
    let attempts = 5;
    let mut last = String::new();
    for attempt in 1..=attempts {
        match report(federator, batch.clone()).await {
            Ok(()) => return Ok(outcome),
            Err(e) => {
                tracing::warn!(attempt, error = %e, "report failed; retrying");
                last = e;
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
    }
    Err(RunOnceError::Report {
        url: federator.to_owned(),
        attempts,
        last,
    })
}

async fn report(url: &str, batch: ResultBatch) -> Result<(), String> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    FederatorClient::new(channel)
        .report(batch)
        .await
        .map(|_| ())
        .map_err(|s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_through_hex_and_bad_input_is_named() {
        let spec = CheckSpec {
            id: "ns/c".into(),
            target: "127.0.0.1:1".into(),
            timeout_ms: 500,
            ..Default::default()
        };
        assert_eq!(decode_spec(&to_hex(&spec.encode_to_vec())).unwrap(), spec);
        assert_eq!(
            decode_spec("abc").unwrap_err().to_string(),
            "--spec is not hex: odd length 3; pass the CheckSpec as the federator writes it into the Job"
        );
        assert_eq!(
            decode_spec("zz").unwrap_err().to_string(),
            "--spec is not hex: bad digits \"zz\" at 0; pass the CheckSpec as the federator writes it into the Job"
        );
        assert!(
            decode_spec("ffff")
                .unwrap_err()
                .to_string()
                .starts_with("--spec does not decode")
        );
    }
}
