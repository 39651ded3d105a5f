//! Who may use the console's API, and whether a request may change anything: the session
//! cookie or an admin token ([`authorize`]); for a POST also not from another site and with
//! the session's CSRF token ([`authorize_change`]).

use std::time::Instant;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;

use super::{ConsoleError, ConsoleState};

/// The session cookie's name.
pub const COOKIE: &str = "callbridge_console";
/// The header the page sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The session id the request's cookie names, if any.
pub fn session_id(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Whether the browser says the request comes from another site: `Sec-Fetch-Site` other than
/// `same-origin`/`none`, or (a browser without fetch metadata) an `Origin` that is not this
/// host (`null` included).
pub fn cross_site(req: &HttpRequest, tls: bool) -> bool {
    let h = req.headers();
    // Set by the browser alone (a page cannot forge it): when present it decides.
    if let Some(site) = h.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    if let Some(origin) = h.get(header::ORIGIN) {
        let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
        let expected = host.map(|host| format!("{}://{host}", if tls { "https" } else { "http" }));
        return expected.as_deref().map(str::as_bytes) != Some(origin.as_bytes());
    }
    false
}

pub fn peer(req: &HttpRequest) -> String {
    req.peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

/// Who is asking: a signed-in browser, or a client with the admin token.
#[derive(Debug, Clone, PartialEq)]
pub enum Caller {
    Session(String),
    Bearer,
}

/// A live session from the cookie, else an `Authorization` header the admin check accepts;
/// neither is 401 (a wrong token: the admin check's own answer, 401 or 429).
pub fn authorize(req: &HttpRequest, state: &ConsoleState) -> Result<Caller, AuthRefusal> {
    if let Some(id) = session_id(req) {
        if state.sessions.csrf_of(&id, Instant::now()).is_some() {
            return Ok(Caller::Session(id));
        }
    }
    if req.headers().contains_key(header::AUTHORIZATION) {
        return match state.check.as_ref()(req.headers(), req.peer_addr().map(|a| a.ip())) {
            None => Ok(Caller::Bearer),
            Some(refused) => Err(AuthRefusal::Answer(Box::new(refused))),
        };
    }
    Err(AuthRefusal::Error(ConsoleError::Unauthenticated))
}

/// [`authorize`] for a state change: refused (403) from another site, and with the session's
/// cookie only with its CSRF token in `X-CSRF-Token`.
pub fn authorize_change(req: &HttpRequest, state: &ConsoleState) -> Result<Caller, AuthRefusal> {
    if cross_site(req, state.tls) {
        tracing::warn!(peer = %peer(req), path = req.path(), "console: cross-site request refused");
        return Err(AuthRefusal::Error(ConsoleError::Forbidden(
            "refused: the request came from another site",
        )));
    }
    let caller = authorize(req, state)?;
    if let Caller::Session(id) = &caller {
        let presented = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !state.sessions.csrf_matches(id, presented, Instant::now()) {
            tracing::warn!(peer = %peer(req), path = req.path(), "console: request without the session's csrf token refused");
            return Err(AuthRefusal::Error(ConsoleError::Forbidden(
                "refused: no or a wrong X-CSRF-Token for this session",
            )));
        }
    }
    Ok(caller)
}

/// A refusal: the console's own error, or the admin check's answer (401/429 as it says).
#[derive(Debug)]
pub enum AuthRefusal {
    Error(ConsoleError),
    Answer(Box<HttpResponse>),
}

impl From<ConsoleError> for AuthRefusal {
    fn from(e: ConsoleError) -> Self {
        AuthRefusal::Error(e)
    }
}

impl std::fmt::Display for AuthRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthRefusal::Error(e) => e.fmt(f),
            AuthRefusal::Answer(r) => write!(f, "refused: {}", r.status()),
        }
    }
}

impl actix_web::ResponseError for AuthRefusal {
    fn status_code(&self) -> actix_web::http::StatusCode {
        match self {
            AuthRefusal::Error(e) => e.status_code(),
            AuthRefusal::Answer(r) => r.status(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            AuthRefusal::Error(e) => e.error_response(),
            AuthRefusal::Answer(r) => {
                let mut b = HttpResponse::build(r.status());
                for (k, v) in r.headers() {
                    if k != header::CONTENT_LENGTH {
                        b.insert_header((k.clone(), v.clone()));
                    }
                }
                b.json(json!({"error": "not an admin token of this bridge (or too many failed attempts)"}))
            }
        }
    }
}
