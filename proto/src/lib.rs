//! Vigil's wire contract (`vigil.v1`) and KEDA's external scaler interface (`externalscaler`),
//! generated from `vigil/v1/*.proto` and `keda/externalscaler.proto` and checked in.
//!
//! The generated code lives in `src/gen/`; `tests/codegen.rs` regenerates it with a vendored
//! protoc and fails on any difference, so building needs no protoc. To refresh it after editing a
//! `.proto` file: `VIGIL_UPDATE_PROTO=1 cargo test -p vigil-proto --test codegen`.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    include!("gen/vigil.v1.rs");
}

pub use v1::*;

pub mod codec;
pub mod pool;

/// KEDA's external scaler interface (`externalscaler`), from `keda/externalscaler.proto`: the
/// federator serves it so KEDA can scale on failing checks.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod externalscaler {
    include!("gen/externalscaler.rs");
}

/// Largest message either side accepts; a batch over it is rejected with `OUT_OF_RANGE`.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Most results one `ResultBatch` may carry.
pub const MAX_BATCH_RESULTS: usize = 10_000;

impl Outcome {
    /// The outcome's short name as used in JSON, metrics and the UI (`SUCCESS`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Unspecified => "UNSPECIFIED",
            Outcome::Success => "SUCCESS",
            Outcome::Failure => "FAILURE",
            Outcome::Timeout => "TIMEOUT",
            Outcome::Error => "ERROR",
        }
    }
}

impl check_spec::Probe {
    /// The probe kind's name as written in a HealthCheck (`http`, `tcp`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            check_spec::Probe::Http(_) => "http",
            check_spec::Probe::Tcp(_) => "tcp",
            check_spec::Probe::Grpc(_) => "grpc",
            check_spec::Probe::Dns(_) => "dns",
            check_spec::Probe::Icmp(_) => "icmp",
            check_spec::Probe::Tls(_) => "tls",
        }
    }
}
