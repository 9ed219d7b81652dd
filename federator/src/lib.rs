//! vigil-federator: places checks on agents, keeps check state, writes results to sinks and
//! serves the API.

pub mod alert;
pub mod api;
pub mod app;
pub mod controller;
pub mod deep_check;
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
