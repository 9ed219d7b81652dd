//! tls probe (stub; being written).

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Attempt, Probe, Verdict};

pub struct TlsProbe;

impl TlsProbe {
    pub fn new(_spec: &vigil_proto::TlsProbe) -> Result<Self, String> {
        Err("tls probes are not implemented yet".into())
    }
}

impl Probe for TlsProbe {
    fn run<'a>(&'a self, _attempt: &'a Attempt) -> BoxFuture<'a, Verdict> {
        async { Verdict::Error("tls probes are not implemented yet".into()) }.boxed()
    }
}
