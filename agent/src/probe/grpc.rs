//! grpc probe (stub; being written).

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Attempt, Probe, Verdict};

pub struct GrpcProbe;

impl GrpcProbe {
    pub fn new(_spec: &vigil_proto::GrpcProbe) -> Result<Self, String> {
        Err("grpc probes are not implemented yet".into())
    }
}

impl Probe for GrpcProbe {
    fn run<'a>(&'a self, _attempt: &'a Attempt) -> BoxFuture<'a, Verdict> {
        async { Verdict::Error("grpc probes are not implemented yet".into()) }.boxed()
    }
}
