use super::*;

fn meta(event: &str, call: &str) -> EventMeta {
    EventMeta {
        event_id: event.into(),
        call_id: call.into(),
        kind: crate::event::EventKind::Status,
        status: Some("completed".into()),
        origin: None,
    }
}

fn kafka(offset: i64) -> Receipt {
    Receipt::Kafka {
        topic: "t".into(),
        partition: 0,
        offset,
    }
}

fn entry(sink: &str, outcome: Outcome, receipt: Option<Receipt>) -> SinkEntry {
    SinkEntry {
        sink: sink.into(),
        kind: "kafka".into(),
        required: true,
        outcome,
        at_ms: 0,
        receipt,
        error: None,
        spool_seq: None,
        audit: None,
    }
}

fn index(max_events: usize, max_age_ms: u64) -> Index {
    Index::new(Bounds {
        max_events,
        max_age_ms,
    })
}

fn verified() -> AuditResult {
    AuditResult {
        verdict: Verdict::Verified,
        at_ms: 1,
        detail: None,
    }
}

fn ids(p: &Page) -> Vec<&str> {
    p.deliveries.iter().map(|r| r.event_id.as_str()).collect()
}

fn all() -> Query {
    Query {
        limit: 100,
        ..Query::default()
    }
}

#[test]
fn a_first_answer_creates_the_record_and_a_retry_updates_it() {
    let mut ix = index(10, 1000);
    let r = ix
        .answered(
            &meta("e1", "c1"),
            Answer::NotDelivered,
            vec![entry("k", Outcome::Failed, None)],
            100,
        )
        .clone();
    assert_eq!(r.seq, 1);
    assert_eq!(r.received_at_ms, 100);
    assert_eq!((r.call_id.as_str(), r.kind.as_str()), ("c1", "status"));
    assert_eq!(r.status.as_deref(), Some("completed"));
    assert_eq!(r.answer, Some(Answer::NotDelivered));
    assert_eq!(
        r.attempts,
        vec![Attempt {
            at_ms: 100,
            http_status: 503,
            answer: Answer::NotDelivered
        }]
    );
    let r = ix
        .answered(
            &meta("e1", "c1"),
            Answer::Accepted,
            vec![entry("k", Outcome::Acked, Some(kafka(5)))],
            200,
        )
        .clone();
    assert_eq!(r.seq, 1, "the same record");
    assert_eq!(r.received_at_ms, 100, "first received");
    assert_eq!(r.answer, Some(Answer::Accepted));
    assert_eq!(r.attempts.len(), 2);
    assert_eq!(r.attempts[1].http_status, 200);
    assert_eq!(r.sinks.len(), 1);
    assert_eq!(r.sinks[0].outcome, Outcome::Acked);
    assert_eq!(ix.len(), 1);
    let r2 = ix.answered(&meta("e2", "c1"), Answer::TooLarge, vec![], 300);
    assert_eq!(r2.seq, 2);
    assert_eq!(r2.attempts[0].http_status, 413);
    assert_eq!(ix.len(), 2);
    assert!(!ix.is_empty());
}

#[test]
fn attempts_keep_the_first_and_the_latest() {
    let mut ix = index(10, u64::MAX);
    for t in 0..(MAX_ATTEMPTS as u64 + 3) {
        ix.answered(&meta("e1", "c1"), Answer::NotDelivered, vec![], t);
    }
    let r = ix.get("e1").expect("kept");
    assert_eq!(r.attempts.len(), MAX_ATTEMPTS);
    assert_eq!(r.attempts[0].at_ms, 0);
    assert_eq!(r.attempts[1].at_ms, 4);
    assert_eq!(r.attempts[MAX_ATTEMPTS - 1].at_ms, MAX_ATTEMPTS as u64 + 2);
}

#[test]
fn a_weaker_later_report_never_overwrites_a_settled_outcome() {
    let mut ix = index(10, 1000);
    let m = meta("e1", "c1");
    let mut acked = entry("k", Outcome::Acked, Some(kafka(5)));
    acked.audit = Some(verified());
    ix.answered(
        &m,
        Answer::Accepted,
        vec![acked.clone(), entry("opt", Outcome::Failed, None)],
        0,
    );
    // A retry: the sink answers from the ledger with the same receipt; the optional one is
    // still pending at the answer.
    ix.answered(
        &m,
        Answer::Accepted,
        vec![
            entry("k", Outcome::AlreadyAcked, Some(kafka(5))),
            entry("opt", Outcome::Pending, None),
        ],
        1,
    );
    let r = ix.get("e1").expect("kept");
    assert_eq!(
        r.sink("k"),
        Some(&acked),
        "the acknowledgement and its audit stay"
    );
    assert_eq!(r.sink("opt").map(|e| e.outcome), Some(Outcome::Failed));
    // Another receipt is another copy: it replaces.
    ix.answered(
        &m,
        Answer::Accepted,
        vec![entry("k", Outcome::AlreadyAcked, Some(kafka(6)))],
        2,
    );
    let k = ix.get("e1").and_then(|r| r.sink("k")).expect("kept");
    assert_eq!(
        (k.outcome, k.receipt.clone()),
        (Outcome::AlreadyAcked, Some(kafka(6)))
    );
    // Pending over pending, anything settled over pending, already_acked over a failure.
    ix.answered(
        &m,
        Answer::Accepted,
        vec![entry("p", Outcome::Pending, None)],
        3,
    );
    ix.answered(
        &m,
        Answer::Accepted,
        vec![entry("p", Outcome::Pending, Some(kafka(1)))],
        4,
    );
    assert_eq!(
        ix.get("e1")
            .and_then(|r| r.sink("p"))
            .and_then(|e| e.receipt.clone()),
        Some(kafka(1))
    );
    ix.answered(
        &m,
        Answer::Accepted,
        vec![entry("p", Outcome::Failed, None)],
        5,
    );
    assert_eq!(
        ix.get("e1").and_then(|r| r.sink("p")).map(|e| e.outcome),
        Some(Outcome::Failed)
    );
    ix.answered(
        &m,
        Answer::Accepted,
        vec![entry("p", Outcome::AlreadyAcked, Some(kafka(2)))],
        6,
    );
    assert_eq!(
        ix.get("e1").and_then(|r| r.sink("p")).map(|e| e.outcome),
        Some(Outcome::AlreadyAcked)
    );
    // A replayed copy counts as stored too.
    ix.sink_update(&m, entry("q", Outcome::Replayed, Some(kafka(3))), 7);
    ix.answered(
        &m,
        Answer::Accepted,
        vec![entry("q", Outcome::AlreadyAcked, Some(kafka(3)))],
        8,
    );
    assert_eq!(
        ix.get("e1").and_then(|r| r.sink("q")).map(|e| e.outcome),
        Some(Outcome::Replayed)
    );
}

#[test]
fn a_background_outcome_replaces_the_sinks_entry_and_may_come_first() {
    let mut ix = index(10, 1000);
    let m = meta("e1", "c1");
    let r = ix
        .sink_update(&m, entry("opt", Outcome::Acked, Some(kafka(1))), 50)
        .clone();
    assert_eq!(r.answer, None);
    assert!(r.attempts.is_empty());
    assert_eq!(r.received_at_ms, 50);
    // The answer's pending report does not hide it.
    ix.answered(
        &m,
        Answer::Accepted,
        vec![entry("opt", Outcome::Pending, None)],
        60,
    );
    let r = ix.get("e1").expect("kept");
    assert_eq!(r.sink("opt").map(|e| e.outcome), Some(Outcome::Acked));
    assert_eq!(r.answer, Some(Answer::Accepted));
    // A replay after a dead letter (a redrive) replaces it, whatever it was.
    ix.sink_update(&m, entry("s", Outcome::DeadLettered, None), 70);
    ix.sink_update(&m, entry("s", Outcome::Replayed, Some(kafka(9))), 80);
    let s = ix.get("e1").and_then(|r| r.sink("s")).expect("kept");
    assert_eq!(
        (s.outcome, s.receipt.clone()),
        (Outcome::Replayed, Some(kafka(9)))
    );
    ix.sink_update(&m, entry("s", Outcome::Pending, None), 90);
    assert_eq!(
        ix.get("e1").and_then(|r| r.sink("s")).map(|e| e.outcome),
        Some(Outcome::Pending)
    );
    assert_eq!(ix.get("e1").map(|r| r.sinks.len()), Some(2));
}

#[test]
fn an_audit_verdict_lands_only_on_the_copy_it_read() {
    let mut ix = index(10, 1000);
    ix.answered(
        &meta("e1", "c1"),
        Answer::Accepted,
        vec![entry("k", Outcome::Acked, Some(kafka(5)))],
        0,
    );
    assert!(
        !ix.audited("e1", "k", &kafka(6), verified()),
        "another copy"
    );
    assert!(
        !ix.audited("e1", "x", &kafka(5), verified()),
        "another sink"
    );
    assert!(
        !ix.audited("e2", "k", &kafka(5), verified()),
        "another event"
    );
    assert_eq!(
        ix.get("e1")
            .and_then(|r| r.sink("k"))
            .and_then(|e| e.audit.clone()),
        None
    );
    assert!(ix.audited("e1", "k", &kafka(5), verified()));
    assert_eq!(
        ix.get("e1")
            .and_then(|r| r.sink("k"))
            .and_then(|e| e.audit.clone()),
        Some(verified())
    );
}

#[test]
fn the_oldest_go_beyond_the_cap_and_past_the_age() {
    let mut ix = index(2, 100);
    ix.answered(&meta("e1", "c1"), Answer::Accepted, vec![], 0);
    ix.answered(&meta("e2", "c1"), Answer::Accepted, vec![], 10);
    assert!(ix.evict(10).is_empty());
    ix.answered(&meta("e3", "c2"), Answer::Accepted, vec![], 20);
    assert_eq!(ix.evict(20), vec![("e1".to_string(), Evicted::Cap)]);
    assert_eq!(ix.len(), 2);
    // e2 is exactly max_age old: kept; a millisecond later it goes.
    assert!(ix.evict(110).is_empty());
    assert_eq!(ix.evict(111), vec![("e2".to_string(), Evicted::Age)]);
    // Its call no longer lists it; the other call is untouched.
    let q = Query {
        call_id: Some("c1".into()),
        ..all()
    };
    assert!(ix.query(&q).deliveries.is_empty());
    assert!(!ix.calls.contains_key("c1"), "an emptied call is dropped");
    assert_eq!(
        ids(&ix.query(&Query {
            call_id: Some("c2".into()),
            ..all()
        })),
        ["e3"]
    );
    assert_eq!(ix.evict(1000), vec![("e3".to_string(), Evicted::Age)]);
    assert!(ix.is_empty());
    assert!(ix.evict(1000).is_empty());
}

#[test]
fn eviction_keeps_the_other_events_of_a_call() {
    let mut ix = index(1, u64::MAX);
    ix.answered(&meta("e1", "c1"), Answer::Accepted, vec![], 0);
    ix.answered(&meta("e2", "c1"), Answer::Accepted, vec![], 1);
    ix.evict(1);
    assert_eq!(
        ids(&ix.query(&Query {
            call_id: Some("c1".into()),
            ..all()
        })),
        ["e2"]
    );
}

#[test]
fn queries_select_by_event_call_sink_outcome_and_time() {
    let mut ix = index(100, u64::MAX);
    ix.answered(
        &meta("e1", "c1"),
        Answer::Accepted,
        vec![
            entry("k", Outcome::Acked, Some(kafka(1))),
            entry("r", Outcome::Spooled, None),
        ],
        10,
    );
    ix.answered(
        &meta("e2", "c2"),
        Answer::NotDelivered,
        vec![entry("k", Outcome::Failed, None)],
        20,
    );
    ix.answered(
        &meta("e3", "c1"),
        Answer::Accepted,
        vec![entry("r", Outcome::Acked, Some(kafka(2)))],
        30,
    );
    ix.audited(
        "e1",
        "k",
        &kafka(1),
        AuditResult {
            verdict: Verdict::Missing,
            at_ms: 0,
            detail: None,
        },
    );
    let q = |f: fn(&mut Query)| {
        let mut q = all();
        f(&mut q);
        ids(&ix.query(&q))
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(q(|_| {}), ["e1", "e2", "e3"]);
    assert_eq!(q(|q| q.event_id = Some("e2".into())), ["e2"]);
    assert!(q(|q| q.event_id = Some("nope".into())).is_empty());
    assert_eq!(q(|q| q.call_id = Some("c1".into())), ["e1", "e3"]);
    assert!(q(|q| q.call_id = Some("nope".into())).is_empty());
    assert!(q(|q| {
        q.call_id = Some("c2".into());
        q.event_id = Some("e1".into());
    })
    .is_empty());
    assert_eq!(
        q(|q| {
            q.event_id = Some("e1".into());
            q.call_id = Some("c1".into());
        }),
        ["e1"]
    );
    assert_eq!(q(|q| q.sink = Some("k".into())), ["e1", "e2"]);
    assert_eq!(q(|q| q.sink = Some("r".into())), ["e1", "e3"]);
    assert_eq!(
        q(|q| {
            q.sink = Some("k".into());
            q.outcome = Some(OutcomeFilter::Outcome(Outcome::Failed));
        }),
        ["e2"]
    );
    assert!(q(|q| {
        q.sink = Some("r".into());
        q.outcome = Some(OutcomeFilter::Outcome(Outcome::Failed));
    })
    .is_empty());
    assert_eq!(
        q(|q| q.outcome = Some(OutcomeFilter::Outcome(Outcome::Acked))),
        ["e1", "e3"]
    );
    assert_eq!(
        q(|q| q.outcome = Some(OutcomeFilter::Audit(Verdict::Missing))),
        ["e1"]
    );
    assert!(q(|q| q.outcome = Some(OutcomeFilter::Audit(Verdict::Verified))).is_empty());
    assert_eq!(q(|q| q.outcome = Some(OutcomeFilter::Unaudited)), ["e3"]);
    assert_eq!(q(|q| q.since_ms = Some(20)), ["e2", "e3"]);
    assert_eq!(q(|q| q.since_ms = Some(21)), ["e3"]);
    assert_eq!(q(|q| q.after = Some(1)), ["e2", "e3"]);
    assert_eq!(q(|q| q.after = Some(2)), ["e3"]);
}

#[test]
fn pages_end_with_the_cursor_of_the_next() {
    let mut ix = index(100, u64::MAX);
    for i in 1..=5 {
        ix.answered(&meta(&format!("e{i}"), "c"), Answer::Accepted, vec![], i);
    }
    let page = |after, limit| {
        ix.query(&Query {
            after,
            limit,
            ..Query::default()
        })
    };
    let p = page(None, 2);
    assert_eq!(ids(&p), ["e1", "e2"]);
    assert_eq!(p.next, Some(2));
    let p = page(p.next, 2);
    assert_eq!(ids(&p), ["e3", "e4"]);
    assert_eq!(p.next, Some(4));
    let p = page(p.next, 2);
    assert_eq!(ids(&p), ["e5"]);
    assert_eq!(p.next, None, "nothing after the last");
    let p = page(None, 5);
    assert_eq!(p.deliveries.len(), 5);
    assert_eq!(p.next, None, "a full last page has no next");
    assert_eq!(
        page(None, 0).deliveries.len(),
        1,
        "a page holds one at least"
    );
}

#[test]
fn the_audit_summary_counts_the_stored_copies_of_the_200s() {
    let mut ix = index(1000, u64::MAX);
    let audit = |v| AuditResult {
        verdict: v,
        at_ms: 0,
        detail: None,
    };
    ix.answered(
        &meta("old", "c"),
        Answer::Accepted,
        vec![entry("k", Outcome::Acked, Some(kafka(0)))],
        5,
    );
    ix.answered(
        &meta("e1", "c"),
        Answer::Accepted,
        vec![
            entry("k", Outcome::Acked, Some(kafka(1))),
            entry("j", Outcome::Replayed, Some(kafka(1))),
        ],
        10,
    );
    ix.answered(
        &meta("e2", "c"),
        Answer::Accepted,
        vec![
            entry("k", Outcome::AlreadyAcked, Some(kafka(2))),
            entry("j", Outcome::Spooled, None),
        ],
        11,
    );
    ix.answered(
        &meta("e3", "c"),
        Answer::Accepted,
        vec![entry("k", Outcome::Acked, Some(kafka(3)))],
        12,
    );
    ix.answered(
        &meta("e4", "c"),
        Answer::Accepted,
        vec![entry("k", Outcome::Acked, Some(kafka(4)))],
        13,
    );
    ix.answered(
        &meta("e5", "c"),
        Answer::NotDelivered,
        vec![entry("k", Outcome::Acked, Some(kafka(5)))],
        14,
    );
    ix.audited("e1", "k", &kafka(1), audit(Verdict::Verified));
    ix.audited("e1", "j", &kafka(1), audit(Verdict::Unverifiable));
    ix.audited("e2", "k", &kafka(2), audit(Verdict::Missing));
    ix.audited("e3", "k", &kafka(3), audit(Verdict::Missing));
    let s = ix.audit_summary(10);
    assert_eq!(
        s,
        vec![
            SinkAudit {
                sink: "k".into(),
                answered: 4,
                verified: 1,
                missing: 2,
                unverifiable: 0,
                unaudited: 1,
                missing_ids: vec!["e2".into(), "e3".into()],
            },
            SinkAudit {
                sink: "j".into(),
                answered: 1,
                verified: 0,
                missing: 0,
                unverifiable: 1,
                unaudited: 0,
                missing_ids: vec![],
            },
        ]
    );
    assert_eq!(ix.audit_summary(5)[0].answered, 5, "since is inclusive");
    assert!(ix.audit_summary(15).is_empty());
}

#[test]
fn the_missing_list_is_capped() {
    let mut ix = index(1000, u64::MAX);
    for i in 0..(MAX_MISSING_LISTED as i64 + 2) {
        let id = format!("e{i}");
        ix.answered(
            &meta(&id, "c"),
            Answer::Accepted,
            vec![entry("k", Outcome::Acked, Some(kafka(i)))],
            0,
        );
        ix.audited(
            &id,
            "k",
            &kafka(i),
            AuditResult {
                verdict: Verdict::Missing,
                at_ms: 0,
                detail: None,
            },
        );
    }
    let s = &ix.audit_summary(0)[0];
    assert_eq!(s.missing, MAX_MISSING_LISTED as u64 + 2);
    assert_eq!(s.missing_ids.len(), MAX_MISSING_LISTED);
}

#[test]
fn restored_records_keep_their_cursor_and_new_ones_follow() {
    let mut ix = index(10, u64::MAX);
    let mut old = index(10, u64::MAX);
    old.answered(&meta("a", "c"), Answer::Accepted, vec![], 0);
    old.answered(&meta("b", "c"), Answer::Accepted, vec![], 1);
    let b = old.get("b").cloned().expect("b");
    ix.restore(b.clone());
    ix.restore(b.clone());
    assert_eq!(ix.len(), 1, "restored once");
    assert_eq!(ix.get("b").map(|r| r.seq), Some(2));
    assert_eq!(
        ids(&ix.query(&Query {
            call_id: Some("c".into()),
            ..all()
        })),
        ["b"]
    );
    let r = ix.answered(&meta("n", "c"), Answer::Accepted, vec![], 2);
    assert_eq!(r.seq, 3);
    let mut lower = b;
    lower.seq = 1;
    lower.event_id = "z".into();
    ix.restore(lower);
    assert_eq!(
        ix.answered(&meta("m", "c"), Answer::Accepted, vec![], 3)
            .seq,
        4,
        "never goes back"
    );
}

#[test]
fn names_read_back_as_they_are_written() {
    for o in Outcome::ALL {
        assert_eq!(Outcome::parse(o.as_str()), Some(o));
        assert_eq!(
            serde_json::to_value(o).ok(),
            Some(serde_json::json!(o.as_str()))
        );
        assert_eq!(
            OutcomeFilter::parse(o.as_str()),
            Some(OutcomeFilter::Outcome(o))
        );
    }
    for v in [Verdict::Verified, Verdict::Missing, Verdict::Unverifiable] {
        assert_eq!(Verdict::parse(v.as_str()), Some(v));
        assert_eq!(
            serde_json::to_value(v).ok(),
            Some(serde_json::json!(v.as_str()))
        );
        assert_eq!(
            OutcomeFilter::parse(v.as_str()),
            Some(OutcomeFilter::Audit(v))
        );
    }
    assert_eq!(Outcome::parse("lost"), None);
    assert_eq!(Verdict::parse("lost"), None);
    assert_eq!(OutcomeFilter::parse("lost"), None);
    assert_eq!(
        OutcomeFilter::parse("unaudited"),
        Some(OutcomeFilter::Unaudited)
    );
    let stored: Vec<Outcome> = Outcome::ALL.into_iter().filter(|o| o.stored()).collect();
    assert_eq!(
        stored,
        [Outcome::Acked, Outcome::AlreadyAcked, Outcome::Replayed]
    );
    assert_eq!(
        [Answer::Accepted, Answer::NotDelivered, Answer::TooLarge].map(Answer::http_status),
        [200, 503, 413]
    );
}

#[test]
fn a_record_reads_back_from_its_json() {
    let mut ix = index(10, 1000);
    let mut e = entry(
        "k",
        Outcome::Spooled,
        Some(Receipt::JetStream {
            stream: "S".into(),
            sequence: 3,
            duplicate: false,
        }),
    );
    e.spool_seq = Some(4);
    e.error = Some("timeout: no acknowledgement".into());
    e.audit = Some(verified());
    let r = ix
        .answered(&meta("e1", "c1"), Answer::Accepted, vec![e], 0)
        .clone();
    let json = serde_json::to_vec(&r).expect("json");
    assert_eq!(serde_json::from_slice::<Record>(&json).ok(), Some(r));
}

#[test]
fn a_new_copy_with_the_same_receipt_is_judged_again() {
    // RabbitMQ's receipt (exchange, routing key) is the same for every publish of an event: a
    // copy published again after the first was judged missing is a new copy, to be audited
    // afresh, not one that keeps the old verdict.
    let rmq = Receipt::Rabbitmq {
        exchange: "x".into(),
        routing_key: "calls.status.completed".into(),
    };
    let mut ix = index(10, 1_000_000);
    let m = meta("e1", "c1");
    let first = SinkEntry {
        at_ms: 10,
        ..entry("mq", Outcome::Acked, Some(rmq.clone()))
    };
    ix.answered(&m, Answer::Accepted, vec![first], 10);
    let missing = AuditResult {
        verdict: Verdict::Missing,
        at_ms: 20,
        detail: Some("purged".into()),
    };
    assert!(ix.audited("e1", "mq", &rmq, missing));
    let again = SinkEntry {
        at_ms: 30,
        ..entry("mq", Outcome::Acked, Some(rmq.clone()))
    };
    let r = ix.answered(&m, Answer::Accepted, vec![again], 30);
    let e = r.sink("mq").expect("entry");
    assert_eq!((e.at_ms, e.audit.as_ref()), (30, None), "{e:?}");
    // A retry's already_acked of that copy does keep the verdict of the acknowledgement.
    assert!(ix.audited("e1", "mq", &rmq, verified()));
    let retry = SinkEntry {
        at_ms: 40,
        ..entry("mq", Outcome::AlreadyAcked, Some(rmq.clone()))
    };
    let r = ix.answered(&m, Answer::Accepted, vec![retry], 40);
    let e = r.sink("mq").expect("entry");
    assert_eq!(
        (e.outcome, e.at_ms, e.audit.as_ref().map(|a| a.verdict)),
        (Outcome::Acked, 30, Some(Verdict::Verified))
    );
}
