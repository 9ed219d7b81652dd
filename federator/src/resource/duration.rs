//! `Duration` written the human way (`10s`, `500ms`, `2m`) in HealthCheck YAML and the CRD.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The duration strings a HealthCheck CRD accepts: what humantime and Go's `time.ParseDuration`
/// (hence CEL's `duration()`) both read, with the same value.
pub const GO_DURATION_PATTERN: &str = "^([0-9]+(ns|us|ms|s|m|h))+$";

/// A duration parsed with `humantime` (`10s`, `1m30s`, `250ms`); negative values are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    pub fn as_millis_u64(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if trimmed.starts_with('-') {
            return Err(format!(
                "invalid duration {s:?}: a duration cannot be negative; write it like 10s, 500ms or 2m"
            ));
        }
        humantime::parse_duration(trimmed)
            .map(Self)
            .map_err(|e| format!("invalid duration {s:?} ({e}); write it like 10s, 500ms or 2m"))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 10s, 500ms or 2m")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "a bare number ({v}) has no unit; write it like {v}s or {v}ms"
                )))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "a bare number ({v}) has no unit; write it like {v}s or {v}ms"
                )))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "a bare number ({v}) has no unit; write it like {v}s or {v}ms"
                )))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "HumanDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // In a CRD the forms both humantime and Go's time.ParseDuration (CEL's `duration()`)
        // read alike, so the schema's CEL rules can compare durations: `1h30m`, not `1h 30m`,
        // `1.5h`, `2min` or `1d`. Local-mode YAML files (serde, not this schema) accept all of
        // humantime's forms.
        json_schema!({
            "type": "string",
            "pattern": GO_DURATION_PATTERN,
            "maxLength": 64,
            "description": "A duration such as 10s, 500ms, 2m or 1h30m (units ns, us, ms, s, m, h; no spaces)."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_human_durations() {
        assert_eq!(
            "10s".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(10)
        );
        assert_eq!(
            "1m30s".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(90)
        );
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(250)
        );
    }

    #[test]
    fn refuses_negative_and_unitless() {
        let err = "-5s".parse::<HumanDuration>().unwrap_err();
        assert!(err.contains("cannot be negative"), "{err}");
        let err = serde_yaml::from_str::<HumanDuration>("10")
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no unit"), "{err}");
    }

    #[test]
    fn displays_round_trip() {
        let d: HumanDuration = "2m".parse().unwrap();
        assert_eq!(d.to_string(), "2m");
    }
}
