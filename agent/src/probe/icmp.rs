//! icmp probe (stub; being written).

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{Attempt, Probe, Verdict};

pub struct IcmpProbe;

impl IcmpProbe {
    pub fn new(_spec: &vigil_proto::IcmpProbe) -> Result<Self, String> {
        Err("icmp probes are not implemented yet".into())
    }
}

impl Probe for IcmpProbe {
    fn run<'a>(&'a self, _attempt: &'a Attempt) -> BoxFuture<'a, Verdict> {
        async { Verdict::Error("icmp probes are not implemented yet".into()) }.boxed()
    }
}
