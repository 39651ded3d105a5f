//! What a sink's preflight probe answers (`callbridge validate --connect`): for each destination
//! it was asked about, whether the broker would store what is published there, and why.
//!
//! The probes live with each sink (`sinks/<kind>/preflight.rs`, [`file`](super::file)), because
//! each knows its broker's API and its own settings; the orchestration and the report live in
//! `crate::preflight`, which depends on these types and never the other way round.
//!
//! A probe never stores anything and never changes the broker: it reads metadata, declares
//! passively, or asks the server's API.

use std::fmt;

/// The answer for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The destination stores what is published there: the evidence.
    Ok(String),
    /// What is published there would not be stored (a 503 at the first webhook): why.
    Missing(String),
    /// The broker cannot tell ahead of time: why, and what evidence there is. A warning, never a
    /// failure, because the destination may well work.
    Unverified(String),
}

impl Verdict {
    pub fn reason(&self) -> &str {
        match self {
            Verdict::Ok(s) | Verdict::Missing(s) | Verdict::Unverified(s) => s,
        }
    }
}

/// One destination's verdict, and the conditions worth an operator's attention that do not
/// stop it from storing events now (e.g. in-sync replicas short of `min.insync.replicas`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub verdict: Verdict,
    pub warnings: Vec<String>,
}

impl Check {
    pub fn ok(evidence: impl Into<String>) -> Check {
        Check {
            verdict: Verdict::Ok(evidence.into()),
            warnings: Vec::new(),
        }
    }
    pub fn missing(reason: impl Into<String>) -> Check {
        Check {
            verdict: Verdict::Missing(reason.into()),
            warnings: Vec::new(),
        }
    }
    pub fn unverified(reason: impl Into<String>) -> Check {
        Check {
            verdict: Verdict::Unverified(reason.into()),
            warnings: Vec::new(),
        }
    }
    pub fn with_warning(mut self, warning: impl Into<String>) -> Check {
        self.warnings.push(warning.into());
        self
    }
}

/// What a probe found: one [`Check`] per destination asked about, in the same order, and
/// remarks about the sink as a whole (how it was checked, what cannot be checked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    pub checks: Vec<Check>,
    pub notes: Vec<String>,
}

/// Why a probe could not check anything: every destination of the sink is then reported as
/// missing with this reason. Messages never hold a password (URLs are not repeated).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The broker did not let us in: unreachable, refused, bad credentials or TLS.
    #[error("cannot connect: {message}")]
    Connect {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The settings do not make a client (should have been refused by `validate` already).
    #[error("cannot build a client: {0}")]
    Client(String),
    /// The broker answered, but not to what we asked.
    #[error("{message}")]
    Broker {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl ProbeError {
    pub fn connect(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> ProbeError {
        ProbeError::Connect {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    pub fn broker(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> ProbeError {
        ProbeError::Broker {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The message with its whole `source` chain, for the report.
    pub fn detail(&self) -> String {
        let mut s = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(e) = cur {
            let text = e.to_string();
            if !s.contains(&text) {
                s.push_str(": ");
                s.push_str(&text);
            }
            cur = e.source();
        }
        s
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.verdict.reason())
    }
}
