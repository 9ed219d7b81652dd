//! Turns a validated HealthCheck into the wire `CheckSpec` agents run.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use prost::Message;
use vigil_proto::{check_spec::Probe, *};

use crate::resource::{HealthCheck, StatusSpec, TlsClientSpec};

/// The wire spec of a valid check (one target per check today).
pub fn check_spec(hc: &HealthCheck) -> CheckSpec {
    let spec = &hc.spec;
    let probe = &spec.probe;
    let wire_probe = if let Some(h) = &probe.http {
        Probe::Http(HttpProbe {
            url: h.url.clone(),
            method: h.method.clone(),
            headers: h.headers.clone().into_iter().collect(),
            body: h.body.clone().unwrap_or_default().into_bytes(),
            expect_status: h.expect_status.iter().filter_map(status_range).collect(),
            body_matches: h.body_matches.clone().unwrap_or_default(),
            max_body_bytes: h.max_body_bytes,
            follow_redirects: h.follow_redirects,
            tls: h.tls.as_ref().map(tls_options),
            body_contains: h.body_contains.clone().unwrap_or_default(),
            ip_preference: match h.ip_preference {
                Some(crate::resource::IpPreference::Ip4) => "ip4".into(),
                Some(crate::resource::IpPreference::Ip6) => "ip6".into(),
                None => String::new(),
            },
        })
    } else if let Some(t) = &probe.tcp {
        Probe::Tcp(TcpProbe {
            address: t.address.clone(),
            send: t.send.clone().unwrap_or_default(),
            expect: t.expect.clone().unwrap_or_default(),
            tls: t.tls.is_some(),
            tls_options: t.tls.as_ref().map(tls_options),
        })
    } else if let Some(g) = &probe.grpc {
        Probe::Grpc(GrpcProbe {
            address: g.address.clone(),
            service: g.service.clone().unwrap_or_default(),
            tls: g.tls.is_some(),
            tls_options: g.tls.as_ref().map(tls_options),
        })
    } else if let Some(d) = &probe.dns {
        Probe::Dns(DnsProbe {
            name: d.name.clone(),
            server: d.server.clone().unwrap_or_default(),
            record_type: format!("{:?}", d.record_type),
            expect_rcode: d
                .expect_rcode
                .clone()
                .unwrap_or_default()
                .to_ascii_uppercase(),
            min_answers: d.expect_answers.unwrap_or_default(),
            answers_match: d.answers_match.clone().unwrap_or_default(),
        })
    } else if let Some(i) = &probe.icmp {
        Probe::Icmp(IcmpProbe {
            host: i.host.clone(),
            count: i.count,
            max_loss_percent: i.max_loss_percent,
        })
    } else if let Some(t) = &probe.tls {
        Probe::Tls(TlsProbe {
            address: t.address.clone(),
            server_name: t.server_name.clone().unwrap_or_default(),
            min_validity_ms: t.min_validity.as_millis_u64(),
            tls_options: t.tls.as_ref().map(tls_options),
        })
    } else {
        unreachable!("validated HealthChecks have exactly one probe kind")
    };
    let mut out = CheckSpec {
        id: hc.id(),
        target: probe.target(),
        interval_ms: spec.interval.as_millis_u64(),
        timeout_ms: spec.effective_timeout().as_millis_u64(),
        retries: spec.retries,
        failing_interval_ms: spec
            .failing_interval
            .map(|d| d.as_millis_u64())
            .unwrap_or_default(),
        labels: spec.labels.clone().into_iter().collect(),
        revision: 0,
        probe: Some(wire_probe),
    };
    out.revision = revision(&out);
    out
}

/// A stable digest of everything in the spec, so agents keep the timers of unchanged checks.
fn revision(spec: &CheckSpec) -> u64 {
    let mut hasher = DefaultHasher::new();
    // Maps encode in arbitrary order; sort them into the digest separately.
    let mut plain = spec.clone();
    let mut labels: Vec<_> = std::mem::take(&mut plain.labels).into_iter().collect();
    labels.sort();
    if let Some(Probe::Http(h)) = &mut plain.probe {
        let mut headers: Vec<_> = std::mem::take(&mut h.headers).into_iter().collect();
        headers.sort();
        headers.hash(&mut hasher);
    }
    labels.hash(&mut hasher);
    plain.encode_to_vec().hash(&mut hasher);
    hasher.finish()
}

fn status_range(s: &StatusSpec) -> Option<StatusRange> {
    s.range().ok().map(|(from, to)| StatusRange {
        from: from.into(),
        to: to.into(),
    })
}

fn tls_options(t: &TlsClientSpec) -> TlsOptions {
    TlsOptions {
        insecure_skip_verify: t.insecure_skip_verify,
        ca_pem: t.ca_pem.clone().unwrap_or_default(),
        server_name: t.server_name.clone().unwrap_or_default(),
        client_cert_pem: t.client_cert_pem.clone().unwrap_or_default(),
        client_key_pem: t.client_key_pem.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> HealthCheck {
        serde_yaml::from_str(yaml).unwrap()
    }

    const WEB: &str = "apiVersion: vigil.dev/v1alpha1\nkind: HealthCheck\nmetadata: {name: web, namespace: shop}\nspec:\n  interval: 10s\n  timeout: 2s\n  retries: 1\n  labels: {team: shop}\n  probe: {http: {url: 'http://127.0.0.1:1/healthz', expectStatus: [200, '3xx']}}\n";

    #[test]
    fn http_check_becomes_wire_spec() {
        let spec = check_spec(&parse(WEB));
        assert_eq!(spec.id, "shop/web");
        assert_eq!(spec.target, "http://127.0.0.1:1/healthz");
        assert_eq!(
            (spec.interval_ms, spec.timeout_ms, spec.retries),
            (10_000, 2_000, 1)
        );
        let Some(Probe::Http(h)) = spec.probe else {
            panic!("http probe")
        };
        assert_eq!(
            h.expect_status,
            vec![
                StatusRange { from: 200, to: 200 },
                StatusRange { from: 300, to: 399 }
            ]
        );
        assert_eq!(h.method, "GET");
    }

    #[test]
    fn revision_follows_content_only() {
        let a = check_spec(&parse(WEB));
        let b = check_spec(&parse(WEB));
        assert_eq!(a.revision, b.revision);
        let c = check_spec(&parse(&WEB.replace("timeout: 2s", "timeout: 3s")));
        assert_ne!(a.revision, c.revision);
    }
}
