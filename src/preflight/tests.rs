use super::*;

fn settings() -> EventSettings {
    EventSettings::default()
}

fn render(template: &str) -> impl Fn(&Event) -> String {
    let t = Template::parse(template).unwrap();
    move |e| t.render_escaped(e, &AMQP_ROUTING_KEY)
}

#[test]
fn enumerates_every_kind_with_every_known_status_and_none() {
    let all = producible();
    assert_eq!(all.len(), EventKind::ALL.len() * (KNOWN_STATUSES.len() + 1));
    assert!(all.contains(&Producible {
        kind: EventKind::Started,
        status: None
    }));
    assert!(all.contains(&Producible {
        kind: EventKind::Other,
        status: Some("retry")
    }));
}

#[test]
fn destinations_collapse_with_the_events_that_reach_them() {
    let r = routes(render("calls.{kind}"), None, &settings());
    assert!(r.per_call.is_empty());
    let names: Vec<&str> = r.checkable.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "calls.started",
            "calls.status",
            "calls.recording",
            "calls.analysis",
            "calls.processed",
            "calls.other"
        ]
    );
    assert_eq!(describe(&r.checkable[1].events), "call.status (any status)");

    let r = routes(render("calls.{kind}.{status}"), None, &settings());
    assert_eq!(r.checkable.len(), 6 * 8);
    assert!(r.checkable.iter().any(|d| d.name == "calls.started.unknown"
        && describe(&d.events) == "call.started without status"));

    let r = routes(render("calls"), None, &settings());
    assert_eq!(r.checkable.len(), 1);
    assert_eq!(describe(&r.checkable[0].events), "every event");

    let r = routes(render("{type}"), None, &settings());
    assert_eq!(r.checkable[1].name, "ai%2Eringg%2Ecall%2Estatus%2Ev1");
}

#[test]
fn the_events_filter_keeps_only_what_the_sink_wants() {
    let filters: Vec<EventFilter> = ["call.status.completed", "call.analysis"]
        .iter()
        .map(|f| EventFilter::parse(f).unwrap())
        .collect();
    let r = routes(render("calls.{kind}.{status}"), Some(&filters), &settings());
    let names: Vec<&str> = r.checkable.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names[0], "calls.status.completed");
    assert_eq!(names.len(), 1 + 8, "{names:?}");
    assert!(!names.contains(&"calls.status.failed"));

    let r = routes(render("calls.{kind}"), Some(&filters), &settings());
    assert_eq!(r.checkable.len(), 2);
    assert_eq!(
        describe(&r.checkable[0].events),
        "call.status.completed",
        "only the status the filter keeps"
    );
}

#[test]
fn per_call_templates_become_patterns_that_are_not_checked() {
    let r = routes(render("calls.{kind}.{call_id}"), None, &settings());
    assert!(r.checkable.is_empty());
    assert_eq!(r.per_call.len(), 6);
    assert_eq!(r.per_call[1].name, "calls.status.{call_id}");
    let t = Template::parse("calls-{agent_id}-{direction}").unwrap();
    let r = routes(|e| t.render_escaped(e, &KAFKA_TOPIC), None, &settings());
    assert_eq!(r.per_call.len(), 1);
    assert_eq!(r.per_call[0].name, "calls-{agent_id}-{direction}");
    let s = SubjectTemplate::parse("calls.{kind}.{call_id}").unwrap();
    let r = routes(|e| s.render(e), None, &settings());
    assert_eq!(r.per_call[0].name, "calls.started.{call_id}");
}

#[test]
fn a_missing_destination_fails_only_a_required_sink() {
    let dests = [("topic a".to_string(), "every event".to_string())];
    let probe = || {
        Ok(Probe {
            checks: vec![Check::missing("gone")],
            notes: vec![],
        })
    };
    let required = Report {
        lines: lines_for("k (kafka)", true, &dests, probe()),
        sinks: 1,
    };
    assert!(!required.passed());
    assert_eq!(
        required.lines[0].to_string(),
        "MISSING  k (kafka) topic a: gone [every event]"
    );
    let optional = Report {
        lines: lines_for("k (kafka, optional)", false, &dests, probe()),
        sinks: 1,
    };
    assert!(optional.passed());
    assert_eq!(optional.lines[0].state, State::Warning);
    let unreachable = lines_for(
        "k (kafka)",
        true,
        &dests,
        Err(ProbeError::Connect {
            message: "refused".into(),
            source: None,
        }),
    );
    assert_eq!(unreachable[0].detail, "cannot connect: refused");
    assert_eq!(unreachable[0].state, State::Missing);
}
