//! Injected failures (`fail_next`) and the log of requests the server answered.

use std::fmt;
use std::time::Duration;

use crate::status::ApiError;

/// The Kubernetes verb of a resource request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// GET of one object.
    Get,
    /// GET of a collection.
    List,
    /// GET of a collection with `watch=true`.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH (any content type, apply included).
    Patch,
    /// DELETE of one object.
    Delete,
    /// DELETE of a collection.
    DeleteCollection,
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        })
    }
}

/// A failure to answer instead of serving matching requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The verb to fail; `None` fails every verb.
    pub verb: Option<Verb>,
    /// `plural` or `plural/status`; `"*"` fails every resource.
    pub resource: String,
    /// HTTP code answered (409, 429, 500, 503, ...); the reason follows the code as on the real server.
    pub code: u16,
    /// Seconds for `Retry-After` (and `details.retryAfterSeconds`).
    pub retry_after: Option<Duration>,
    /// How many matching requests fail.
    pub times: usize,
}

impl Fault {
    /// Fails the next matching request once.
    pub fn new(verb: Verb, resource: &str, code: u16) -> Self {
        Self {
            verb: Some(verb),
            resource: resource.to_string(),
            code,
            retry_after: None,
            times: 1,
        }
    }

    /// Fails this many matching requests.
    pub fn times(mut self, times: usize) -> Self {
        self.times = times;
        self
    }

    /// Adds a `Retry-After` header (whole seconds, at least 1).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    fn matches(&self, verb: Verb, resource: &str) -> bool {
        self.verb.is_none_or(|v| v == verb) && (self.resource == "*" || self.resource == resource)
    }

    fn to_error(&self, verb: Verb, resource: &str) -> ApiError {
        let error = ApiError::new(
            self.code,
            format!("injected failure for {verb} {resource} (fail_next)"),
        );
        match self.retry_after {
            Some(after) => error.with_retry_after(after.as_secs().max(1) as u32),
            None => error,
        }
    }
}

/// One request the server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// The verb, for resource requests (`None` for discovery).
    pub verb: Option<Verb>,
    /// `plural` or `plural/status` (empty for discovery).
    pub resource: String,
    /// `Content-Type` of the request, if any.
    pub content_type: Option<String>,
    /// HTTP code answered (200 for a watch that started).
    pub code: u16,
}

/// Faults waiting to fire and the request log.
#[derive(Debug, Default)]
pub struct Recorder {
    faults: Vec<Fault>,
    requests: Vec<RequestRecord>,
}

impl Recorder {
    /// Adds a fault.
    pub fn inject(&mut self, fault: Fault) {
        if fault.times > 0 {
            self.faults.push(fault);
        }
    }

    /// The error to answer for a request, consuming one use of the first matching fault.
    pub fn take_fault(&mut self, verb: Verb, resource: &str) -> Option<ApiError> {
        let index = self.faults.iter().position(|f| f.matches(verb, resource))?;
        let error = self.faults[index].to_error(verb, resource);
        self.faults[index].times -= 1;
        if self.faults[index].times == 0 {
            self.faults.remove(index);
        }
        Some(error)
    }

    /// Drops every pending fault.
    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// Logs an answered request.
    pub fn record(&mut self, record: RequestRecord) {
        self.requests.push(record);
    }

    /// The log.
    pub fn requests(&self) -> &[RequestRecord] {
        &self.requests
    }

    /// Empties the log.
    pub fn clear(&mut self) {
        self.requests.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_fire_as_often_as_asked() {
        let mut recorder = Recorder::default();
        recorder.inject(
            Fault::new(Verb::Patch, "healthchecks/status", 429)
                .times(2)
                .retry_after(Duration::from_secs(3)),
        );
        assert!(recorder.take_fault(Verb::Patch, "healthchecks").is_none());
        assert!(
            recorder
                .take_fault(Verb::Get, "healthchecks/status")
                .is_none()
        );
        let error = recorder
            .take_fault(Verb::Patch, "healthchecks/status")
            .unwrap();
        assert_eq!(
            (error.code, error.reason.as_str(), error.retry_after),
            (429, "TooManyRequests", Some(3))
        );
        assert!(
            recorder
                .take_fault(Verb::Patch, "healthchecks/status")
                .is_some()
        );
        assert!(
            recorder
                .take_fault(Verb::Patch, "healthchecks/status")
                .is_none()
        );
    }

    #[test]
    fn wildcard_faults() {
        let mut recorder = Recorder::default();
        recorder.inject(Fault {
            verb: None,
            ..Fault::new(Verb::Get, "*", 500)
        });
        let error = recorder.take_fault(Verb::Watch, "leases").unwrap();
        assert_eq!((error.code, error.reason.as_str()), (500, "InternalError"));
    }
}
