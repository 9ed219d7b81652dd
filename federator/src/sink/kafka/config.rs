//! Kafka sink options: typed settings, the librdkafka passthrough, and the client config built
//! from both (refusing passthrough keys that would break the delivery guarantee).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;

/// The default topic every result goes to.
pub const DEFAULT_TOPIC: &str = "healthcheck-results";

/// How a record's value is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Encoding {
    /// `crate::record::ResultRecord` as JSON (schema 1).
    #[default]
    Json,
    /// `vigil.v1.ProbeResult` as protobuf.
    Protobuf,
}

impl Encoding {
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Protobuf => "application/x-protobuf; message=vigil.v1.ProbeResult",
        }
    }
}

#[derive(Clone, Debug)]
pub struct KafkaOptions {
    /// `host:port,...` (librdkafka's `bootstrap.servers`).
    pub brokers: String,
    pub topic: String,
    pub encoding: Encoding,
    /// Create the topic when it is missing (needs the broker's CreateTopics permission).
    pub create_topic: bool,
    /// Partitions and replication factor of a topic the federator creates.
    pub partitions: i32,
    pub replication_factor: i32,
    /// Raw librdkafka properties (`security.protocol`, `sasl.*`, `ssl.*`, tuning).
    pub librdkafka: BTreeMap<String, String>,
    /// How long start-up waits for the broker before reporting it unreachable (and retrying).
    pub connect_timeout: Duration,
}

impl KafkaOptions {
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: DEFAULT_TOPIC.to_owned(),
            encoding: Encoding::Json,
            create_topic: true,
            partitions: 6,
            replication_factor: 1,
            librdkafka: BTreeMap::new(),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--kafka-brokers is empty; pass host:port[,host:port...]")]
    NoBrokers,
    #[error("--kafka-topic is empty; pass a topic name (default {DEFAULT_TOPIC})")]
    NoTopic,
    #[error("--kafka-option {key}={value} conflicts with {owner}; {fix}")]
    Conflict {
        key: String,
        value: String,
        owner: &'static str,
        fix: &'static str,
    },
    #[error("--kafka-option {0:?} is not key=value; write it like security.protocol=SASL_SSL")]
    NotKeyValue(String),
}

/// Settings the sink owns: a passthrough may not change them.
const OWNED: &[(&str, &str, &str)] = &[
    (
        "bootstrap.servers",
        "--kafka-brokers",
        "set the brokers with --kafka-brokers",
    ),
    (
        "enable.idempotence",
        "the delivery guarantee (idempotent producer)",
        "remove it: results are acknowledged only after an idempotent, acks=all delivery",
    ),
    (
        "acks",
        "the delivery guarantee (acks=all)",
        "remove it: results are acknowledged only after an idempotent, acks=all delivery",
    ),
    (
        "request.required.acks",
        "the delivery guarantee (acks=all)",
        "remove it: results are acknowledged only after an idempotent, acks=all delivery",
    ),
    (
        "max.in.flight.requests.per.connection",
        "the idempotent producer's ordering (at most 5 in flight)",
        "remove it",
    ),
    (
        "max.in.flight",
        "the idempotent producer's ordering (at most 5 in flight)",
        "remove it",
    ),
];

/// Parses one `--kafka-option key=value`.
pub fn parse_option(s: &str) -> Result<(String, String), ConfigError> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(ConfigError::NotKeyValue(s.to_owned())),
    }
}

impl KafkaOptions {
    /// The producer's librdkafka configuration: tuned defaults for throughput, the delivery
    /// guarantee, then the passthrough (which may override tuning but not the guarantee).
    pub fn client_config(&self) -> Result<ClientConfig, ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(ConfigError::NoBrokers);
        }
        if self.topic.trim().is_empty() {
            return Err(ConfigError::NoTopic);
        }
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Never give up on a queued result: an outage holds acks back instead of losing
            // data (agents keep what is unacknowledged, and back-pressure reaches them).
            .set("message.timeout.ms", "0")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("batch.size", "1000000")
            .set("batch.num.messages", "100000")
            .set("queue.buffering.max.messages", "500000")
            .set("queue.buffering.max.kbytes", "524288")
            .set("socket.nagle.disable", "true")
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "2000")
            .set("client.id", "vigil-federator");
        for (key, value) in &self.librdkafka {
            if let Some((_, owner, fix)) = OWNED.iter().find(|(k, _, _)| k == key) {
                return Err(ConfigError::Conflict {
                    key: key.clone(),
                    value: value.clone(),
                    owner,
                    fix,
                });
            }
            c.set(key, value);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthrough_overrides_tuning_but_not_the_guarantee() {
        let mut o = KafkaOptions::new("127.0.0.1:9092");
        o.librdkafka.insert("linger.ms".into(), "20".into());
        o.librdkafka
            .insert("security.protocol".into(), "SASL_SSL".into());
        let c = o.client_config().unwrap();
        assert_eq!(c.get("linger.ms"), Some("20"));
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));

        o.librdkafka.insert("acks".into(), "1".into());
        let err = o.client_config().unwrap_err().to_string();
        assert_eq!(
            err,
            "--kafka-option acks=1 conflicts with the delivery guarantee (acks=all); remove it: \
             results are acknowledged only after an idempotent, acks=all delivery"
        );
    }

    #[test]
    fn bad_options_say_how_to_fix_them() {
        assert_eq!(
            parse_option("linger.ms").unwrap_err().to_string(),
            "--kafka-option \"linger.ms\" is not key=value; write it like security.protocol=SASL_SSL"
        );
        assert_eq!(
            parse_option(" sasl.username = vigil ").unwrap(),
            ("sasl.username".to_owned(), "vigil".to_owned())
        );
        let mut o = KafkaOptions::new("127.0.0.1:9092");
        o.librdkafka
            .insert("bootstrap.servers".into(), "elsewhere:9092".into());
        assert!(
            o.client_config()
                .unwrap_err()
                .to_string()
                .contains("set the brokers with --kafka-brokers")
        );
        assert_eq!(
            KafkaOptions::new(" ").client_config().unwrap_err(),
            ConfigError::NoBrokers
        );
    }
}
