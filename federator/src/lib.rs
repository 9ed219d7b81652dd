//! vigil-federator: places checks on agents, keeps check state, writes results to sinks and
//! serves the API.

/// Every result is decoded, stamped, folded into the state and encoded in small allocations,
/// and librdkafka allocates each record and its headers on one thread and frees them on
/// another; under load glibc's malloc took over a third of the federator's CPU. mimalloc, with
/// `override` so that librdkafka's C allocations use it too, took that to about a tenth.
/// Declared here rather than in `main.rs` so that the binary and the benchmarks linking this
/// library (pipeline-bench's bare producer) run on the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod alert;
pub mod api;
pub mod app;
pub mod controller;
pub mod deep_check;
pub mod federation;
pub mod grpc;
pub mod hub;
pub mod keda;
pub mod loader;
pub mod metrics;
pub mod pipeline;
pub mod placement;
pub mod record;
pub mod resource;
pub mod sink;
pub mod spec;
pub mod state;
pub mod upstream;
