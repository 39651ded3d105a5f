//! Security controls through the real HTTP endpoint: signed bodies (`auth.signature`).

use crate::common::*;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The Standard Webhooks spec's example secret (24 bytes) and one of our own (32 bytes).
const OLD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW_SECRET: &str = "whsec_bmV3LXNlY3JldC1uZXctc2VjcmV0LW5ldy1zZWNyZXQ=";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// Signs like a Standard Webhooks sender: `v1,<base64 HMAC-SHA256 of "id.ts.body">`.
fn sign(secret: &str, id: &str, ts: u64, body: &[u8]) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let tag = hmac_sha256(
        &key,
        &[id.as_bytes(), b".", ts.to_string().as_bytes(), b".", body],
    );
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

fn signed_config(auth: &str, path: &std::path::Path) -> String {
    format!(
        "server: {{listen: \"127.0.0.1:0\", deadline_ms: 3000}}\nauth: {auth}\nsinks:\n{}",
        file_sink("archive", path, "")
    )
}

async fn post(app: &TestApp, body: &[u8], headers: &[(&str, String)]) -> Answer {
    let mut req = app
        .client
        .post(format!("{}/callback", app.base))
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    answer(req.send().await.unwrap()).await
}

fn standard_headers(id: &str, ts: u64, sig: String) -> Vec<(&'static str, String)> {
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", sig),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_signed_bodies_pass_and_tampered_stale_or_unsigned_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let app = spawn(&signed_config(
        &format!(
            "{{signature: {{scheme: standard-webhooks, secrets: [{NEW_SECRET}, {OLD_SECRET}]}}}}"
        ),
        &path,
    ))
    .await;
    let body = status_payload(&unique("signed"), "ongoing").to_string();
    let body = body.as_bytes();
    let id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";

    // unsigned: refused before the body matters
    let a = post(&app, body, &[]).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(a.body["error"]["code"], "invalid_signature");
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("webhook-id"),
        "{}",
        a.body
    );

    // tampered: signed for other bytes (one space added)
    let ts = now();
    let mut tampered = body.to_vec();
    tampered.insert(1, b' ');
    let a = post(
        &app,
        &tampered,
        &standard_headers(id, ts, sign(NEW_SECRET, id, ts, body)),
    )
    .await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(a.body["error"]["code"], "invalid_signature");
    assert!(a.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no signature"));

    // stale: correctly signed, but 10 minutes old
    let old = now() - 600;
    let a = post(
        &app,
        body,
        &standard_headers(id, old, sign(NEW_SECRET, id, old, body)),
    )
    .await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("outside the 300 s tolerance"),
        "{}",
        a.body
    );
    assert!(
        read_lines(&path).is_empty(),
        "nothing refused was published"
    );

    // valid, with the new secret
    let ts = now();
    let headers = standard_headers(id, ts, sign(NEW_SECRET, id, ts, body));
    let first = post(&app, body, &headers).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(read_lines(&path).len(), 1);

    // the same request replayed within the tolerance: a duplicate, not a new event
    let replay = post(&app, body, &headers).await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(
        replay.body["sinks"]["archive"]["duplicate"], true,
        "{}",
        replay.body
    );
    assert_eq!(replay.event_id(), first.event_id());
    assert_eq!(read_lines(&path).len(), 1, "the replay published nothing");

    // rotation: the old secret (second in the list) still verifies, alone or beside another
    // signature in the same header
    let other = status_payload(&unique("signed-old"), "ongoing").to_string();
    let other = other.as_bytes();
    let ts = now();
    let sigs = format!(
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {}",
        sign(OLD_SECRET, "msg_2", ts, other)
    );
    let a = post(&app, other, &standard_headers("msg_2", ts, sigs)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(read_lines(&path).len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_github_style_beside_an_api_key_needs_both() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let secret = "It's a Secret to Everybody";
    let app = spawn(&signed_config(
        &format!(
            "{{api_keys: {{keys: [\"{KEY}\"]}}, signature: {{scheme: hmac, secrets: [\"{secret}\"], \
             header: X-Hub-Signature-256, prefix: 'sha256='}}}}"
        ),
        &path,
    ))
    .await;
    let body = status_payload(&unique("gh"), "ongoing").to_string();
    let sig = format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), &[body.as_bytes()]))
    );

    let signed_only = post(
        &app,
        body.as_bytes(),
        &[("X-Hub-Signature-256", sig.clone())],
    )
    .await;
    assert_eq!(signed_only.status, 401);
    assert_eq!(signed_only.body["error"]["code"], "unauthorized");

    let key_only = post(&app, body.as_bytes(), &[("X-API-Key", KEY.to_string())]).await;
    assert_eq!(key_only.status, 401);
    assert_eq!(key_only.body["error"]["code"], "invalid_signature");

    let wrong = format!(
        "sha256={}",
        hex::encode(hmac_sha256(b"another secret", &[body.as_bytes()]))
    );
    let a = post(
        &app,
        body.as_bytes(),
        &[
            ("X-API-Key", KEY.to_string()),
            ("X-Hub-Signature-256", wrong),
        ],
    )
    .await;
    assert_eq!(a.status, 401);
    assert_eq!(a.body["error"]["code"], "invalid_signature");
    assert!(read_lines(&path).is_empty());

    let both = post(
        &app,
        body.as_bytes(),
        &[("X-API-Key", KEY.to_string()), ("X-Hub-Signature-256", sig)],
    )
    .await;
    assert_eq!(both.status, 200, "{}", both.body);
    assert_eq!(read_lines(&path).len(), 1);
    app.stop().await;
}

async fn post_with(app: &TestApp, headers: &[(&str, &str)]) -> Answer {
    let body = status_payload(&unique("rate"), "ongoing").to_string();
    let mut req = app.client.post(format!("{}/callback", app.base)).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    answer(req.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_by_address_answers_429_with_retry_after_once_the_budget_is_spent() {
    let (app, path, _dir) =
        spawn_archive_with(", rate_limit: {requests: 2, period_secs: 60}").await;
    for _ in 0..2 {
        let a = post_with(&app, &[("X-API-Key", KEY)]).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let limited = post_with(&app, &[("X-API-Key", KEY)]).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.body["error"]["code"], "rate_limited");
    let retry: u64 = limited.retry_after.as_deref().unwrap().parse().unwrap();
    assert!(
        (1..=30).contains(&retry),
        "one request back every 30 s: {retry}"
    );
    // by address, before authentication: a wrong key from the same address is limited too
    let guess = post_with(&app, &[("X-API-Key", "guess")]).await;
    assert_eq!(guess.status, 429);
    assert_eq!(
        read_lines(&path).len(),
        2,
        "nothing past the budget was published"
    );
    assert!(app
        .metrics()
        .await
        .contains("callbridge_http_shed_total{limit=\"rate\"} 2"));
    // the probes are not rate limited
    assert_eq!(app.get("/healthz").await.status, 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_by_credential_gives_each_key_its_own_budget() {
    let (app, _path, _dir) =
        spawn_archive_with(", rate_limit: {requests: 1, period_secs: 60, by: credential}").await;
    assert_eq!(post_with(&app, &[("X-API-Key", KEY)]).await.status, 200);
    let limited = post_with(&app, &[("X-API-Key", KEY)]).await;
    assert_eq!(limited.status, 429);
    assert!(limited.retry_after.is_some());
    // a random key beside the spent one does not buy a fresh budget
    assert_eq!(
        post_with(
            &app,
            &[("Authorization", "Bearer nope"), ("X-API-Key", KEY)]
        )
        .await
        .status,
        429
    );
    // another key, and a bearer token, each have their own
    assert_eq!(
        post_with(&app, &[("X-API-Key", "test-key-2")]).await.status,
        200
    );
    assert_eq!(
        post_with(&app, &[("Authorization", "Bearer test-token")])
            .await
            .status,
        200
    );
    // an unauthenticated request is refused by authentication, not counted
    assert_eq!(post_with(&app, &[("X-API-Key", "wrong")]).await.status, 401);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listen_serves_metrics_and_probes_there_and_not_on_the_webhook_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut s = settings(&config_with_server(
        ", admin_listen: \"127.0.0.1:0\"",
        &file_sink("archive", &path, ""),
    ));
    s.server.workers = 2;
    let app = callbridge::Application::build(s).await.unwrap();
    let main = format!("http://127.0.0.1:{}", app.port());
    let admin = format!("http://127.0.0.1:{}", app.admin_port().expect("admin port"));
    let handle = app.handle();
    let task = tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let get = |url: String| {
        let client = client.clone();
        async move { answer(client.get(url).send().await.unwrap()).await }
    };

    for p in ["/metrics", "/healthz", "/readyz", "/spool"] {
        assert_eq!(
            get(format!("{main}{p}")).await.status,
            404,
            "{p} on the webhook listener"
        );
    }
    assert_eq!(get(format!("{admin}/healthz")).await.status, 200);
    assert_eq!(get(format!("{admin}/readyz")).await.status, 200);
    assert_eq!(
        get(format!("{admin}/spool")).await.status,
        404,
        "no spool configured"
    );
    let a = answer(
        client
            .post(format!("{main}/callback"))
            .header("X-API-Key", KEY)
            .body(status_payload(&unique("admin"), "ongoing").to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let metrics = client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("callbridge_events_total"), "{metrics}");
    // webhooks are not accepted on the admin listener
    let on_admin = answer(
        client
            .post(format!("{admin}/callback"))
            .header("X-API-Key", KEY)
            .body(status_payload(&unique("admin"), "ongoing").to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(on_admin.status, 404);
    assert_eq!(read_lines(&path).len(), 1);

    // stopping the webhook listener stops the admin one too
    handle.stop(true).await;
    task.await.unwrap().unwrap();
    assert!(client.get(format!("{admin}/healthz")).send().await.is_err());
}

/// A self-signed certificate for `localhost`: (certificate PEM, key PEM).
fn self_signed() -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

/// A client that trusts only `cert_pem` and reaches `localhost` at `port`; new for every call,
/// so no pooled connection hides a new certificate.
async fn https_get(cert_pem: &str, port: u16, path: &str) -> Result<u16, reqwest::Error> {
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    Ok(client
        .get(format!("https://localhost:{port}{path}"))
        .send()
        .await?
        .status()
        .as_u16())
}

async fn https_metrics(cert_pem: &str, port: u16) -> String {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap()
        .get(format!("https://localhost:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_serves_https_and_picks_up_a_rotated_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let (old_cert, old_key) = self_signed();
    std::fs::write(&cert_file, &old_cert).unwrap();
    std::fs::write(&key_file, &old_key).unwrap();
    let path = dir.path().join("events.jsonl");
    let app = spawn(&config_with_server(
        &format!(
            ", tls: {{cert_file: \"{}\", key_file: \"{}\", reload_secs: 1}}",
            cert_file.display(),
            key_file.display()
        ),
        &file_sink("archive", &path, ""),
    ))
    .await;
    let port: u16 = app.base.rsplit(':').next().unwrap().parse().unwrap();

    assert_eq!(https_get(&old_cert, port, "/healthz").await.unwrap(), 200);
    // plain HTTP is not spoken on a TLS listener
    assert!(app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .is_err());
    // a webhook over TLS
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(old_cert.as_bytes()).unwrap())
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let a = answer(
        client
            .post(format!("https://localhost:{port}/callback"))
            .header("X-API-Key", KEY)
            .body(status_payload(&unique("tls"), "ongoing").to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);

    // a half-written rotation (a key that does not fit) keeps the old certificate
    let (new_cert, new_key) = self_signed();
    std::fs::write(&cert_file, &new_cert).unwrap();
    // (the old key stays for now: the pair does not load)
    eventually(
        std::time::Duration::from_secs(15),
        "a failed reload",
        || async {
            let m = https_metrics(&old_cert, port).await;
            m.contains("callbridge_tls_reloads_total{outcome=\"failed\"}")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        https_get(&old_cert, port, "/healthz").await.unwrap(),
        200,
        "a pair that does not load leaves the old certificate in place"
    );

    // the rotation completes: new handshakes get the new certificate
    std::fs::write(&key_file, &new_key).unwrap();
    eventually(
        std::time::Duration::from_secs(15),
        "the new certificate",
        || async {
            https_get(&new_cert, port, "/healthz")
                .await
                .ok()
                .filter(|s| *s == 200)
        },
    )
    .await;
    assert!(
        https_get(&old_cert, port, "/healthz").await.is_err(),
        "the old certificate is no longer served"
    );
    assert!(https_metrics(&new_cert, port)
        .await
        .contains("callbridge_tls_reloads_total{outcome=\"ok\"} 1"));
    app.stop().await;
}

/// One stranger connection, as issue #28 describes it: forged Standard Webhooks headers (a
/// fresh timestamp, a signature of nothing), `Content-Length: 1048576`, then one body byte a
/// second. Counts itself in `answered` once the bridge answers it (or closes the connection).
async fn stranger(
    addr: String,
    answered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    statuses: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /callback HTTP/1.1\r\nHost: {addr}\r\nwebhook-id: msg_stranger\r\n\
         webhook-timestamp: {}\r\nwebhook-signature: v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\
         Content-Length: 1048576\r\n\r\n",
        now()
    );
    conn.write_all(head.as_bytes()).await.expect("send head");
    let (mut rd, mut wr) = conn.into_split();
    let trickle = async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            if wr.write_all(b"x").await.is_err() {
                // The bridge closed the connection: wait for its answer on the read side.
                std::future::pending::<()>().await;
            }
        }
    };
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::select! {
        _ = trickle => {}
        _ = read => {}
    }
    let status = String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("(closed without an answer)")
        .to_string();
    statuses.lock().unwrap().push(status);
    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// Issue #28, item 2: with signature-only auth, strangers that announce 1 MiB bodies with forged
/// signature headers and trickle them a byte a second do not make correctly signed webhooks
/// fail. Against the binary's real listener, with the default limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stranger_cannot_shed_signed_webhooks() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    const STRANGERS: usize = 32;
    const SIGNED: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let yaml = format!(
        "server: {{listen: \"127.0.0.1:0\", admin_listen: \"127.0.0.1:0\"}}\nlog: {{format: json}}\n\
         auth: {{signature: {{scheme: standard-webhooks, secrets: [{NEW_SECRET}]}}}}\n\
         sinks:\n{}",
        file_sink("archive", &path, "")
    );
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    let addr = format!("127.0.0.1:{}", bridge.port);
    let client = reqwest::Client::new();

    let answered = Arc::new(AtomicUsize::new(0));
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let strangers: Vec<_> = (0..STRANGERS)
        .map(|_| tokio::spawn(stranger(addr.clone(), answered.clone(), statuses.clone())))
        .collect();
    // Every stranger is either being handled (its body awaited) or was already answered.
    let metrics_url = format!("{}/metrics", bridge.admin_base());
    eventually(
        std::time::Duration::from_secs(10),
        "every stranger handled or answered",
        || async {
            let m = client
                .get(&metrics_url)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let in_flight: usize = m
                .lines()
                .find_map(|l| l.strip_prefix("callbridge_http_requests_in_flight "))?
                .trim()
                .parse()
                .ok()?;
            (in_flight + answered.load(Ordering::SeqCst) >= STRANGERS).then_some(())
        },
    )
    .await;

    let url = format!("http://{addr}/callback");
    let signed = futures::future::join_all((0..SIGNED).map(|i| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let body = status_payload(&unique(&format!("signed{i}")), "ongoing").to_string();
            let (id, ts) = (format!("msg_signed_{i}"), now());
            let mut req = client.post(&url).body(body.clone());
            for (k, v) in standard_headers(&id, ts, sign(NEW_SECRET, &id, ts, body.as_bytes())) {
                req = req.header(k, v);
            }
            answer(req.send().await.expect("answered")).await
        }
    }))
    .await;
    let still_trickling = STRANGERS - answered.load(Ordering::SeqCst);
    let strangers_answered = statuses.lock().unwrap().clone();
    let refused: Vec<String> = signed
        .iter()
        .filter(|a| a.status != 200)
        .map(|a| format!("{} {}", a.status, a.body))
        .collect();
    assert!(
        refused.is_empty(),
        "{} of {SIGNED} signed webhooks refused, e.g. {:?}; strangers answered: {strangers_answered:?}",
        refused.len(),
        refused.first(),
    );
    assert_eq!(
        still_trickling, STRANGERS,
        "every stranger was still trickling while the signed webhooks were answered: \
         {strangers_answered:?}"
    );
    assert_eq!(read_lines(&path).len(), SIGNED);
    for s in strangers {
        s.abort();
    }
    bridge.stop().await;
}
