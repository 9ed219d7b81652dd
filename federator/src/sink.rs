//! Result sinks: one trait, one module per sink. A sink reports success only for what it has
//! durably delivered; the pipeline acknowledges agents on nothing less.

pub mod jsonl;
pub mod kafka;

use std::sync::Arc;

use futures::future::BoxFuture;
use vigil_proto::pool::Results;

/// Why a sink could not take a batch; the pipeline retries it with backoff.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("writing to {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unavailable(String),
}

/// A destination for results.
pub trait Sink: Send + 'static {
    /// Short name for logs and metrics (`jsonl`, `kafka`).
    fn name(&self) -> &'static str;

    /// Starts delivering every result of every batch, in order; the future completes when all
    /// are durable, or fails as a whole. Whatever must happen in order (handing records to a
    /// producer) happens before this returns, so later writes can start while it completes.
    fn write(&mut self, batches: Vec<Arc<Results>>) -> BoxFuture<'static, Result<(), SinkError>>;

    /// How many writes may be in flight at once (their completions are taken in order).
    fn max_in_flight(&self) -> usize {
        1
    }

    /// Results one write takes at most (the pipeline caps it at 20,000). A write's records are
    /// encoded and handed over in one go on the sink's task, which meanwhile takes no
    /// completions; a sink with many writes in flight does better with smaller ones.
    fn max_group_results(&self) -> usize {
        usize::MAX
    }

    /// Whether the sink can take writes now (for `/readyz`).
    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>>;
}
