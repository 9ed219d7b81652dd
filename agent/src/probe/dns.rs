//! dns probe (stub; being written).

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Attempt, Probe, Verdict};

pub struct DnsProbe;

impl DnsProbe {
    pub fn new(_spec: &vigil_proto::DnsProbe) -> Result<Self, String> {
        Err("dns probes are not implemented yet".into())
    }
}

impl Probe for DnsProbe {
    fn run<'a>(&'a self, _attempt: &'a Attempt) -> BoxFuture<'a, Verdict> {
        async { Verdict::Error("dns probes are not implemented yet".into()) }.boxed()
    }
}
