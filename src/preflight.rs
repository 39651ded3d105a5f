//! `callbridge validate --connect`: before the first webhook, would every event the
//! configuration can produce be stored by every sink it is sent to?
//!
//! Without it a misrouted configuration (a topic never created, a routing key no queue binds, a
//! subject no stream captures) shows up as 503s once the sender is live. Here the set of events
//! is enumerated instead: every [`EventKind`] × every known status (and no status, which a
//! template renders as `unknown`), kept where the sink's `events` filter wants it. Each sink's
//! destination template is rendered over a synthetic event of each kind and status, identical
//! destinations are collapsed (with the events that map to them), and the sink's probe asks
//! the broker about each one (`crate::sinks::<kind>::preflight`): all sinks at once, each
//! bounded by [`SINK_TIMEOUT`].
//!
//! A template that uses per-call values (`{call_id}`, `{agent_id}`, `{direction}`) names a new
//! destination per call: it cannot be checked ahead, and the report says so with the pattern.
//! Statuses this version does not know (the sender may add some) are not enumerated.
//!
//! The verdict: every required sink can store every event it would be sent (exit 0), or not
//! (exit 1). Problems on optional sinks, and whatever cannot be verified, are warnings.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::config::{Settings, SinkSettings};
use crate::event::{
    envelope, CallData, Event, EventFilter, EventKind, EventSettings, Family, KNOWN_STATUSES,
};
use crate::sinks::file::FileSinkSettings;
use crate::sinks::nats::SubjectTemplate;
use crate::sinks::preflight::{Check, Probe, ProbeError, Verdict};
use crate::sinks::{kafka, nats, rabbitmq};
use crate::template::{Template, Var, AMQP_ROUTING_KEY, KAFKA_TOPIC};

/// How long one sink's check may take, connection included.
pub const SINK_TIMEOUT: Duration = Duration::from_secs(10);
/// What a probe is given of [`SINK_TIMEOUT`], so its own "no answer" (which says what it was
/// waiting for) arrives before the overall timeout.
const PROBE_BUDGET: Duration = Duration::from_millis(9_500);

/// One kind of event the configuration can produce, as far as destinations are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Producible {
    pub kind: EventKind,
    /// `None`: no status, rendered `unknown`.
    pub status: Option<&'static str>,
}

/// Every kind × every known status and no status, in a stable order.
pub fn producible() -> Vec<Producible> {
    EventKind::ALL
        .into_iter()
        .flat_map(|kind| {
            KNOWN_STATUSES
                .into_iter()
                .map(Some)
                .chain([None])
                .map(move |status| Producible { kind, status })
        })
        .collect()
}

/// Stand-ins for per-call values: letters only, so every sink's escaping keeps them as they
/// are, and they can be replaced by `{call_id}` etc. in the rendered pattern.
const PER_CALL: [(Var, &str, &str); 3] = [
    (Var::CallId, "QQpreflightCallIdQQ", "{call_id}"),
    (Var::AgentId, "QQpreflightAgentIdQQ", "{agent_id}"),
    (Var::Direction, "QQpreflightDirectionQQ", "{direction}"),
];

/// A synthetic event of `p`'s kind and status, per-call values replaced by stand-ins.
pub fn synthetic_event(p: Producible, settings: &EventSettings) -> Event {
    let mut data = CallData::new(p.kind, Family::Callback, PER_CALL[0].1.into());
    data.status = p.status.map(str::to_string);
    data.agent_id = Some(PER_CALL[1].1.into());
    data.direction = Some(PER_CALL[2].1.into());
    envelope(
        "preflight".into(),
        data,
        settings,
        "1970-01-01T00:00:00Z".into(),
    )
}

/// A rendered destination and the events that map to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub name: String,
    pub events: Vec<Producible>,
}

/// Where one sink sends the events it wants: destinations that can be checked, and patterns
/// that depend on per-call values (which cannot).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Routes {
    pub checkable: Vec<Destination>,
    pub per_call: Vec<Destination>,
}

/// Renders `render` over every producible event `filters` keeps (all when `None`), collapsing
/// identical names in first-seen order. A name holding a per-call stand-in becomes a pattern.
pub fn routes(
    render: impl Fn(&Event) -> String,
    filters: Option<&[EventFilter]>,
    settings: &EventSettings,
) -> Routes {
    let mut out = Routes::default();
    for p in producible() {
        let event = synthetic_event(p, settings);
        if filters.is_some_and(|fs| !fs.iter().any(|f| f.matches(&event))) {
            continue;
        }
        let mut name = render(&event);
        let mut per_call = false;
        for (_, mark, shown) in PER_CALL {
            if name.contains(mark) {
                name = name.replace(mark, shown);
                per_call = true;
            }
        }
        let list = if per_call {
            &mut out.per_call
        } else {
            &mut out.checkable
        };
        match list.iter_mut().find(|d| d.name == name) {
            Some(d) => d.events.push(p),
            None => list.push(Destination {
                name,
                events: vec![p],
            }),
        }
    }
    out
}

/// The events of a destination in words: `every event`, `call.status (any status)`,
/// `call.status.completed`, `call.started without status`.
pub fn describe(events: &[Producible]) -> String {
    let all = producible();
    if all.iter().all(|p| events.contains(p)) {
        return "every event".into();
    }
    let mut by_kind: BTreeMap<usize, Vec<Option<&str>>> = BTreeMap::new();
    for p in events {
        let i = EventKind::ALL
            .iter()
            .position(|k| *k == p.kind)
            .unwrap_or(0);
        by_kind.entry(i).or_default().push(p.status);
    }
    let mut parts = Vec::new();
    for (i, statuses) in by_kind {
        let kind = EventKind::ALL[i];
        if statuses.len() == KNOWN_STATUSES.len() + 1 {
            parts.push(format!("call.{kind} (any status)"));
            continue;
        }
        for s in &statuses {
            parts.push(match s {
                Some(s) => format!("call.{kind}.{s}"),
                None => format!("call.{kind} without status"),
            });
        }
    }
    parts.join(", ")
}

/// How a line of the report counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ok,
    /// A required sink would not store these events: the check fails.
    Missing,
    /// An optional sink's problem, or something that cannot be verified.
    Warning,
    /// How a sink was checked.
    Note,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Ok => "ok",
            State::Missing => "MISSING",
            State::Warning => "warning",
            State::Note => "note",
        })
    }
}

/// One line of the report: a sink and one destination (or the sink as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub state: State,
    /// The sink's name, its kind, and `optional` when it is.
    pub sink: String,
    /// `topic calls.status`, `exchange calls key calls.status.completed`, ...; empty for a note
    /// about the whole sink.
    pub destination: String,
    pub detail: String,
    /// The events that map to the destination, in words; empty for a note.
    pub events: String,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<8} {}", self.state.to_string(), self.sink)?;
        if !self.destination.is_empty() {
            write!(f, " {}", self.destination)?;
        }
        write!(f, ": {}", self.detail)?;
        if !self.events.is_empty() {
            write!(f, " [{}]", self.events)?;
        }
        Ok(())
    }
}

/// Everything `validate --connect` found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub lines: Vec<Line>,
    pub sinks: usize,
}

impl Report {
    /// Every required sink can store every event it would be sent.
    pub fn passed(&self) -> bool {
        !self.lines.iter().any(|l| l.state == State::Missing)
    }

    fn count(&self, state: State) -> usize {
        self.lines.iter().filter(|l| l.state == state).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.lines {
            writeln!(f, "{l}")?;
        }
        let verdict = if self.passed() {
            "every required sink can store every event it would be sent"
        } else {
            "a required sink cannot store some events: their webhooks would be answered 503"
        };
        writeln!(
            f,
            "summary: {} sink(s): {} ok, {} missing, {} warning(s); {verdict}",
            self.sinks,
            self.count(State::Ok),
            self.count(State::Missing),
            self.count(State::Warning)
        )
    }
}

/// Runs every sink's check at once and collects the report.
pub async fn run(settings: &Settings) -> Report {
    let checks = settings
        .sinks
        .iter()
        .map(|sink| check_sink(sink, &settings.event));
    let lines = futures::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect();
    Report {
        lines,
        sinks: settings.sinks.len(),
    }
}

/// [`run`] on a runtime of its own, for the CLI.
pub fn check(settings: &Settings) -> std::io::Result<Report> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = rt.block_on(run(settings));
    // A probe that ran out of time may still hold a blocking thread (librdkafka): do not wait.
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(report)
}

/// The destinations one sink's template gives, and how each kind of sink names them.
#[derive(Debug)]
pub struct Target {
    pub routes: Routes,
    /// `topic`, `key`, `subject`.
    pub noun: &'static str,
    /// Prefix before the noun, e.g. `exchange calls`.
    pub prefix: String,
}

impl Target {
    /// How the report names a destination: `topic calls.status`, `exchange calls key x`.
    pub fn named(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            format!("{} {name}", self.noun)
        } else {
            format!("{} {} {name}", self.prefix, self.noun)
        }
    }
}

/// What one sink publishes to, as `validate --connect` checks it and `callbridge asyncapi`
/// documents it: one enumeration for both, so the contract names exactly what is checked.
#[derive(Debug)]
pub enum SinkTargets<'a> {
    /// The null sink: stores nothing.
    Nothing,
    /// The file sink: one file (`routes.checkable` holds it once, with the events it wants).
    File {
        settings: &'a FileSinkSettings,
        routes: Routes,
    },
    /// A broker sink: its template over every producible event it wants.
    Broker(Target),
}

/// The sink's `events` filters (`None`: every event). Invalid entries were refused by
/// `validate`; here they are left out.
fn sink_filters(sink: &SinkSettings) -> Option<Vec<EventFilter>> {
    sink.spec().common().events.map(|list| {
        list.iter()
            .filter_map(|f| EventFilter::parse(f).ok())
            .collect()
    })
}

/// Where `sink` sends what it wants; `Err` names an invalid destination template.
pub fn sink_targets<'a>(
    sink: &'a SinkSettings,
    settings: &EventSettings,
) -> Result<SinkTargets<'a>, String> {
    let filters = sink_filters(sink);
    let filters = filters.as_deref();
    let target = |template: &str,
                  noun: &'static str,
                  prefix: String,
                  render: &dyn Fn(&Template, &Event) -> String| {
        let t = Template::parse(template).map_err(|e| e.to_string())?;
        Ok(SinkTargets::Broker(Target {
            routes: routes(|e| render(&t, e), filters, settings),
            noun,
            prefix,
        }))
    };
    match sink {
        SinkSettings::Null(_) => Ok(SinkTargets::Nothing),
        SinkSettings::File(f) => {
            let path = f.path.display().to_string();
            Ok(SinkTargets::File {
                settings: f,
                routes: routes(|_| path.clone(), filters, settings),
            })
        }
        SinkSettings::Kafka(k) => target(&k.topic, "topic", String::new(), &|t, e| {
            t.render_escaped(e, &KAFKA_TOPIC)
        }),
        SinkSettings::Rabbitmq(r) => target(
            &r.routing_key,
            "key",
            if r.exchange.is_empty() {
                "default exchange".into()
            } else {
                format!("exchange {}", r.exchange)
            },
            &|t, e| t.render_escaped(e, &AMQP_ROUTING_KEY),
        ),
        SinkSettings::Nats(n) => {
            let subject = SubjectTemplate::parse(&n.subject)?;
            Ok(SinkTargets::Broker(Target {
                routes: routes(|e| subject.render(e), filters, settings),
                noun: "subject",
                prefix: String::new(),
            }))
        }
    }
}

async fn check_sink(sink: &SinkSettings, settings: &EventSettings) -> Vec<Line> {
    let spec = sink.spec();
    let c = spec.common();
    let label = if c.required {
        format!("{} ({})", c.name, spec.kind())
    } else {
        format!("{} ({}, optional)", c.name, spec.kind())
    };
    let line = |state, destination: String, detail: String, events: String| Line {
        state,
        sink: label.clone(),
        destination,
        detail,
        events,
    };

    let target = match sink_targets(sink, settings) {
        Ok(SinkTargets::Nothing) => {
            return vec![line(
                State::Ok,
                String::new(),
                "stores nothing by design (null sink); every event is acknowledged".into(),
                String::new(),
            )]
        }
        Ok(SinkTargets::File {
            settings: f,
            routes,
        }) => {
            let events = routes
                .checkable
                .first()
                .map(|d| describe(&d.events))
                .unwrap_or_default();
            let check = f.preflight();
            return lines_for(
                &label,
                c.required,
                &[(format!("file {}", f.path.display()), events)],
                Ok(Probe {
                    checks: vec![check],
                    notes: Vec::new(),
                }),
            );
        }
        Ok(SinkTargets::Broker(t)) => t,
        Err(e) => {
            return vec![line(
                State::Missing,
                String::new(),
                format!("invalid destination template: {e}"),
                String::new(),
            )]
        }
    };
    let named = |name: &str| target.named(name);

    let mut lines: Vec<Line> = target
        .routes
        .per_call
        .iter()
        .map(|d| {
            line(
                State::Warning,
                named(&d.name),
                "depends on per-call values: cannot be checked ahead".into(),
                describe(&d.events),
            )
        })
        .collect();
    let checkable = &target.routes.checkable;
    if checkable.is_empty() {
        if target.routes.per_call.is_empty() {
            lines.push(line(
                State::Note,
                String::new(),
                "its events filter keeps none of the kinds and statuses this version knows; \
                 nothing to check"
                    .into(),
                String::new(),
            ));
        }
        return lines;
    }
    let names: Vec<String> = checkable.iter().map(|d| d.name.clone()).collect();
    let probe = async {
        match sink {
            SinkSettings::Kafka(k) => kafka::preflight::probe(k, &names, PROBE_BUDGET).await,
            SinkSettings::Rabbitmq(r) => rabbitmq::preflight::probe(r, &names, PROBE_BUDGET).await,
            SinkSettings::Nats(n) => nats::preflight::probe(n, &names, PROBE_BUDGET).await,
            SinkSettings::File(_) | SinkSettings::Null(_) => Ok(Probe::default()),
        }
    };
    let result = match tokio::time::timeout(SINK_TIMEOUT, probe).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Connect {
            message: format!("no answer within {} s", SINK_TIMEOUT.as_secs()),
            source: None,
        }),
    };
    let described: Vec<(String, String)> = checkable
        .iter()
        .map(|d| (named(&d.name), describe(&d.events)))
        .collect();
    lines.extend(lines_for(&label, c.required, &described, result));
    lines
}

/// The lines for one sink's probe result: its notes, then one line per destination (each
/// `(destination, events)`), and one per warning.
fn lines_for(
    label: &str,
    required: bool,
    destinations: &[(String, String)],
    result: Result<Probe, ProbeError>,
) -> Vec<Line> {
    let probe = match result {
        Ok(p) => p,
        Err(e) => {
            let why = e.detail();
            Probe {
                checks: destinations
                    .iter()
                    .map(|_| Check::missing(why.clone()))
                    .collect(),
                notes: Vec::new(),
            }
        }
    };
    let mut lines: Vec<Line> = probe
        .notes
        .iter()
        .map(|n| Line {
            state: State::Note,
            sink: label.to_string(),
            destination: String::new(),
            detail: n.clone(),
            events: String::new(),
        })
        .collect();
    for ((destination, events), check) in destinations.iter().zip(&probe.checks) {
        let (state, detail) = match &check.verdict {
            Verdict::Ok(s) => (State::Ok, s.clone()),
            Verdict::Missing(s) if required => (State::Missing, s.clone()),
            Verdict::Missing(s) => (
                State::Warning,
                format!("would not be stored (optional sink, the answer stays 200): {s}"),
            ),
            Verdict::Unverified(s) => (State::Warning, s.clone()),
        };
        lines.push(Line {
            state,
            sink: label.to_string(),
            destination: destination.clone(),
            detail,
            events: events.clone(),
        });
        for w in &check.warnings {
            lines.push(Line {
                state: State::Warning,
                sink: label.to_string(),
                destination: destination.clone(),
                detail: w.clone(),
                events: String::new(),
            });
        }
    }
    lines
}

#[cfg(test)]
mod tests;
