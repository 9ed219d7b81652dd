//! The notifier's refusal of settings it cannot work with.

use super::*;

#[test]
fn zero_durations_are_refused_with_the_flag_to_fix() {
    let state = Arc::new(State::default());
    let metrics = Arc::new(Metrics::new());
    let hub = Arc::new(Hub::new(Arc::clone(&state), Arc::clone(&metrics)));
    let config = Config {
        alertmanagers: Vec::new(),
        resend_interval: Duration::from_secs(60),
        external_url: Url::parse("http://127.0.0.1:8080/").unwrap(),
        agent_silent_after: Duration::ZERO,
        deep_checks: Arc::default(),
        federation: None,
    };
    let start = |config: Config| {
        Notifier::start(
            config,
            Arc::clone(&hub),
            Arc::clone(&state),
            Arc::clone(&metrics),
            &TaskTracker::new(),
            CancellationToken::new(),
        )
        .err()
        .map(|e| e.to_string())
    };
    assert_eq!(
        start(config.clone()).as_deref(),
        Some("--agent-silent-after must be more than zero; write it like 2m")
    );
    let mut resend = config;
    resend.agent_silent_after = Duration::from_secs(1);
    resend.resend_interval = Duration::ZERO;
    assert_eq!(
        start(resend).as_deref(),
        Some("--alert-resend-interval must be more than zero")
    );
}
