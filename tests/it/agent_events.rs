//! The second webhook family (agent event subscriptions) over HTTP, into the same event stream.

use crate::common::*;
use serde_json::{json, Value};

fn agent_event(name: &str, call_id: &str) -> Value {
    let mut v = fixture(&format!("agent-{name}.payload.json"));
    v["call_id"] = Value::from(call_id);
    v
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    auth: (&str, &str),
    body: &Value,
) -> Answer {
    let resp = app
        .client
        .request(method, format!("{}{path}", app.base))
        .header(auth.0, auth.1)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    answer(resp).await
}

const BEARER: (&str, &str) = ("Authorization", "Bearer test-token");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_patch_post_with_bearer_each_answer_exactly_200() {
    let (app, path, _dir) = spawn_archive_with(", extra_paths: [/agent-events]").await;
    let call = unique("agent");
    let names = [
        "call-started",
        "call-completed",
        "recording-completed",
        "platform-analysis-completed",
        "client-analysis-completed",
        "all-processing-completed",
    ];
    let methods = [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::PATCH,
    ];
    for (i, name) in names.iter().enumerate() {
        let path = if i % 2 == 0 {
            "/callback"
        } else {
            "/agent-events"
        };
        let a = send(
            &app,
            methods[i % 3].clone(),
            path,
            BEARER,
            &agent_event(name, &call),
        )
        .await;
        assert_eq!(a.status, 200, "{name}: {}", a.body);
        assert_eq!(a.body["status"], "accepted");
    }
    let lines = read_lines(&path);
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| l["data"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "started",
            "status",
            "recording",
            "analysis",
            "analysis",
            "processed"
        ]
    );
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types[0], "ai.ringg.call.started.v1");
    assert_eq!(types[5], "ai.ringg.call.processed.v1");
    assert!(lines
        .iter()
        .all(|l| l["subject"] == call.as_str() && l["data"]["family"] == "agent_event"));

    // a wrong or missing token is refused and publishes nothing
    let before = read_lines(&path).len();
    let other = agent_event("call-started", &unique("denied"));
    for (method, auth) in [
        (reqwest::Method::PUT, ("Authorization", "Bearer nope")),
        (reqwest::Method::PATCH, ("X-Other", "x")),
    ] {
        let a = send(&app, method, "/callback", auth, &other).await;
        assert_eq!(a.status, 401);
        assert_eq!(a.body["error"]["code"], "unauthorized");
    }
    assert_eq!(read_lines(&path).len(), before);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_agent_event_twice_is_one_publish_with_one_id() {
    let (app, path, _dir) = spawn_archive().await;
    let ev = agent_event("call-completed", &unique("twice"));
    let first = send(&app, reqwest::Method::POST, "/callback", BEARER, &ev).await;
    let second = send(&app, reqwest::Method::PUT, "/callback", BEARER, &ev).await;
    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(first.body["event_id"], second.body["event_id"]);
    assert_eq!(second.body["sinks"]["archive"]["duplicate"], true);
    assert_eq!(read_lines(&path).len(), 1);
    app.stop().await;
}

/// One call can complete twice: `call_completed` with status `retry`, then `completed` (and a
/// later attempt with another `retry_count`). Each is a new event that is published, not a
/// "duplicate" of the first; only a true redelivery is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_call_completed_for_one_call_is_published_not_a_duplicate() {
    let (app, path, _dir) = spawn_archive().await;
    let call = unique("completes-twice");
    let mut ids = Vec::new();
    for (status, retry_count) in [("retry", 0), ("completed", 0), ("completed", 1)] {
        let mut ev = agent_event("call-completed", &call);
        ev["status"] = Value::from(status);
        ev["retry_count"] = Value::from(retry_count);
        let a = send(&app, reqwest::Method::POST, "/callback", BEARER, &ev).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["status"], "accepted", "{}", a.body);
        assert_ne!(a.body["sinks"]["archive"]["duplicate"], true, "{}", a.body);
        ids.push(a.body["event_id"].clone());
    }
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 3, "{lines:?}");
    let statuses: Vec<&Value> = lines.iter().map(|l| &l["data"]["status"]).collect();
    assert_eq!(statuses, ["retry", "completed", "completed"]);
    let distinct: std::collections::HashSet<String> = ids.iter().map(Value::to_string).collect();
    assert_eq!(distinct.len(), 3, "three ids: {ids:?}");
    app.stop().await;
}

/// A callback status webhook and an agent `call_completed` for the same call agree on the fields
/// consumers route and join on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_families_land_with_consistent_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let completed_only = dir.path().join("completed.jsonl");
    let app = spawn(&config_with_sinks(&format!(
        "{}{}",
        file_sink("archive", &path, ""),
        file_sink(
            "completed",
            &completed_only,
            ", events: [call.status.completed]"
        )
    )))
    .await;
    let call = unique("both");
    let callback = status_payload(&call, "completed");
    let mut agent = agent_event("call-completed", &call);
    agent["call_type"] = json!("outbound");
    assert_eq!(app.post(&callback).await.status, 200);
    assert_eq!(
        send(&app, reqwest::Method::POST, "/callback", BEARER, &agent)
            .await
            .status,
        200
    );
    // a recording event is not a status event: the filtered sink skips it
    assert_eq!(
        send(
            &app,
            reqwest::Method::POST,
            "/callback",
            BEARER,
            &agent_event("recording-completed", &call)
        )
        .await
        .status,
        200
    );

    let lines = read_lines(&path);
    assert_eq!(lines.len(), 3);
    let (a, b) = (&lines[0], &lines[1]);
    assert_eq!(a["data"]["family"], "callback");
    assert_eq!(b["data"]["family"], "agent_event");
    for field in ["kind", "call_id", "direction", "status", "retry"] {
        assert_eq!(a["data"][field], b["data"][field], "data.{field}");
    }
    for attr in ["type", "subject", "callstatus", "partitionkey"] {
        assert_eq!(a[attr], b[attr], "{attr}");
    }
    assert_ne!(a["id"], b["id"], "two deliveries, two events");
    // transcripts: kept as sent, and one normalised form for both
    assert!(a["data"]["transcript"].is_string());
    assert!(b["data"]["transcript"].is_array());
    for l in [a, b] {
        let turns = l["data"]["transcript_turns"].as_array().unwrap();
        assert!(!turns.is_empty());
        assert!(turns
            .iter()
            .all(|t| t["text"].is_string() && t.get("speaker").is_some()));
    }
    let completed = read_lines(&completed_only);
    assert_eq!(
        completed.len(),
        2,
        "the events filter treats both families alike"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_neither_family_is_400_naming_what_was_expected() {
    let (app, path, _dir) = spawn_archive().await;
    for body in [
        json!({}),
        json!({"call_id": "c", "type": "call_completed"}),
        json!({"event": "call_started"}),
    ] {
        let a = send(&app, reqwest::Method::POST, "/callback", BEARER, &body).await;
        assert_eq!(a.status, 400, "{body}");
        assert_eq!(a.body["error"]["code"], "invalid_payload");
        let msg = a.body["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("event_type") && msg.contains("status"),
            "{msg}"
        );
    }
    let a = send(
        &app,
        reqwest::Method::PUT,
        "/callback",
        BEARER,
        &json!({"event_type": "call_completed", "call_id": "c"}),
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["error"]["field"], "status");
    assert!(read_lines(&path).is_empty());

    // an event type the platform adds later is forwarded, not refused
    let a = send(
        &app,
        reqwest::Method::POST,
        "/callback",
        BEARER,
        &json!({"event_type": "call_transferred", "call_id": unique("new")}),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(read_lines(&path)[0]["data"]["kind"], "other");
    assert!(app
        .metrics()
        .await
        .contains("callbridge_unknown_event_type_total 1"));
    app.stop().await;
}
