//! The console's routes: the page shell, its versioned assets, sign-in and sign-out, and the
//! security headers every answer under `/console` carries.
//!
//! The assets are embedded in the binary and served under a name holding the first 12 hex
//! digits of their SHA-256 (`console-<hash>.js`), `immutable` for a year: a new binary serves
//! new names, so no browser keeps a stale script. The shell itself is never cached.

use std::sync::LazyLock;
use std::time::Instant;

use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::guard::{self, cross_site, peer, session_id, COOKIE};
use super::{api, ConsoleError, ConsoleState};

/// Scripts and styles from this origin only, no inline script, no framing, no plugins.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

const SHELL: &str = include_str!("assets/index.html");

struct Asset {
    name: String,
    body: &'static str,
    content_type: &'static str,
}

fn versioned(stem: &str, ext: &str, body: &'static str, content_type: &'static str) -> Asset {
    let hash = hex::encode(Sha256::digest(body.as_bytes()));
    Asset {
        name: format!("{stem}-{}.{ext}", &hash[..12]),
        body,
        content_type,
    }
}

static ASSETS: LazyLock<[Asset; 2]> = LazyLock::new(|| {
    [
        versioned(
            "console",
            "js",
            include_str!("assets/console.js"),
            "text/javascript; charset=utf-8",
        ),
        versioned(
            "console",
            "css",
            include_str!("assets/console.css"),
            "text/css; charset=utf-8",
        ),
    ]
});

/// The versioned name of the script and of the stylesheet.
pub fn asset_names() -> (String, String) {
    (ASSETS[0].name.clone(), ASSETS[1].name.clone())
}

/// The console's routes, for the admin plane's `configure`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/console", web::get().to(to_slash)).service(
        web::scope("/console")
            .wrap(
                DefaultHeaders::new()
                    .add(("Content-Security-Policy", CSP))
                    .add(("X-Content-Type-Options", "nosniff"))
                    .add(("X-Frame-Options", "DENY"))
                    .add(("Referrer-Policy", "same-origin"))
                    .add(("Cross-Origin-Opener-Policy", "same-origin"))
                    .add(("Cross-Origin-Resource-Policy", "same-origin")),
            )
            .route("/", web::get().to(page))
            .route("/assets/{name}", web::get().to(asset))
            .route("/session", web::post().to(sign_in))
            .route("/api/session", web::get().to(api::session))
            .route("/api/signout", web::post().to(sign_out))
            .route("/api/overview", web::get().to(api::overview))
            .route("/api/find", web::get().to(api::find))
            .route("/api/dead", web::get().to(api::dead_letters))
            .route("/api/dead/count", web::get().to(api::dead_count))
            .route("/api/dead/entry", web::get().to(api::dead_entry))
            .route("/api/dead/redrive", web::post().to(api::redrive))
            .route("/api/dead/purge", web::post().to(api::purge))
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(ConsoleError::NotFound("no such console route".into()))
            })),
    );
}

async fn to_slash() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/console/"))
        .finish()
}

/// Minimal HTML escaping for the few server-side values of the shell (fixed messages only).
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The shell: signed in (the page's script takes over) or the sign-in form, with `error`.
fn shell(state: &ConsoleState, signed_in: bool, error: Option<&str>) -> String {
    let (js, css) = asset_names();
    let hint = if state.open {
        "This bridge has no admin tokens: leave the field empty."
    } else {
        "An admin token of this bridge (admin.tokens)."
    };
    SHELL
        .replace("{{js}}", &js)
        .replace("{{css}}", &css)
        .replace(
            "{{state}}",
            if signed_in { "signed-in" } else { "signed-out" },
        )
        .replace("{{hint}}", hint)
        .replace("{{error}}", &escape(error.unwrap_or("")))
        .replace(
            "{{error_hidden}}",
            if error.is_some() { "" } else { " hidden" },
        )
}

fn html(status: actix_web::http::StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/html; charset=utf-8")
        .body(body)
}

async fn page(req: HttpRequest, state: web::Data<ConsoleState>) -> HttpResponse {
    let signed_in =
        session_id(&req).is_some_and(|id| state.sessions.csrf_of(&id, Instant::now()).is_some());
    html(
        actix_web::http::StatusCode::OK,
        shell(&state, signed_in, None),
    )
}

async fn asset(path: web::Path<String>) -> HttpResponse {
    let name = path.into_inner();
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
            .content_type(a.content_type)
            .body(a.body),
        None => actix_web::ResponseError::error_response(&ConsoleError::NotFound(format!(
            "no asset {name:?}"
        ))),
    }
}

/// The session cookie: never readable by scripts, never sent on another site's requests, only
/// under `/console`; `Secure` when the admin listener has TLS.
fn cookie(tls: bool, value: &str, max_age: u64) -> String {
    format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/console; Max-Age={max_age}{}",
        if tls { "; Secure" } else { "" }
    )
}

#[derive(Deserialize)]
struct SignIn {
    #[serde(default)]
    token: String,
}

/// `POST /console/session` (the sign-in form): the token through the admin plane's check
/// (its failure budget included); a session and its cookie, then back to the page.
async fn sign_in(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ConsoleState>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    if cross_site(&req, state.tls) {
        tracing::warn!(peer = %peer(&req), "console: cross-site sign-in refused");
        return html(
            StatusCode::FORBIDDEN,
            shell(
                &state,
                false,
                Some("Refused: the request came from another site."),
            ),
        );
    }
    let Ok(form) = serde_urlencoded::from_bytes::<SignIn>(&body) else {
        return html(
            StatusCode::BAD_REQUEST,
            shell(&state, false, Some("The form could not be read.")),
        );
    };
    let mut headers = HeaderMap::new();
    let bearer = format!("Bearer {}", form.token.trim());
    if let Ok(v) = HeaderValue::from_str(&bearer) {
        headers.insert(header::AUTHORIZATION, v);
    }
    if let Some(refused) = state.check.as_ref()(&headers, req.peer_addr().map(|a| a.ip())) {
        let message = if refused.status() == StatusCode::TOO_MANY_REQUESTS {
            "Too many failed attempts from this address; wait a minute."
        } else {
            "That is not an admin token of this bridge."
        };
        return html(refused.status(), shell(&state, false, Some(message)));
    }
    let new = match state.sessions.create(Instant::now()) {
        Ok(n) => n,
        Err(e) => return actix_web::ResponseError::error_response(&ConsoleError::Session(e)),
    };
    tracing::info!(peer = %peer(&req), sessions = state.sessions.len(), "admin: console signed in");
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/console/"))
        .insert_header((
            header::SET_COOKIE,
            cookie(state.tls, &new.id, super::session::SESSION_TTL.as_secs()),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// `POST /console/api/signout`: the session is deleted (a state change: the same checks as
/// every other POST) and the cookie cleared.
async fn sign_out(
    req: HttpRequest,
    state: web::Data<ConsoleState>,
) -> Result<HttpResponse, guard::AuthRefusal> {
    let caller = guard::authorize_change(&req, &state)?;
    if let guard::Caller::Session(id) = caller {
        state.sessions.remove(&id);
    }
    tracing::info!(peer = %peer(&req), "admin: console signed out");
    Ok(HttpResponse::Ok()
        .insert_header((header::SET_COOKIE, cookie(state.tls, "", 0)))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({"signed_out": true})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn assets_have_versioned_names_of_their_content() {
        let (js, css) = asset_names();
        assert!(js.starts_with("console-") && js.ends_with(".js"), "{js}");
        assert!(css.ends_with(".css"));
        let hash = hex::encode(Sha256::digest(include_str!("assets/console.js").as_bytes()));
        assert_eq!(js, format!("console-{}.js", &hash[..12]));
    }

    #[test]
    fn the_cookie_is_strict_and_secure_behind_tls() {
        let plain = cookie(false, "abc", 60);
        assert_eq!(
            plain,
            format!("{COOKIE}=abc; HttpOnly; SameSite=Strict; Path=/console; Max-Age=60")
        );
        assert!(cookie(true, "abc", 60).ends_with("; Secure"));
    }

    #[test]
    fn the_session_cookie_is_read_among_others() {
        let req = TestRequest::default()
            .insert_header((header::COOKIE, format!("a=1; {COOKIE}=abc ; b=2")))
            .to_http_request();
        assert_eq!(session_id(&req).as_deref(), Some("abc"));
        let none = TestRequest::default()
            .insert_header((header::COOKIE, format!("{COOKIE}=")))
            .to_http_request();
        assert_eq!(session_id(&none), None);
    }

    #[test]
    fn another_site_is_told_apart_by_fetch_metadata_or_origin() {
        let req = |headers: &[(&str, &str)]| {
            let mut r = TestRequest::default().insert_header((header::HOST, "127.0.0.1:9090"));
            for (k, v) in headers {
                r = r.insert_header((*k, *v));
            }
            r.to_http_request()
        };
        assert!(
            !cross_site(&req(&[]), false),
            "no browser metadata: a CLI client"
        );
        assert!(!cross_site(
            &req(&[("sec-fetch-site", "same-origin")]),
            false
        ));
        assert!(cross_site(&req(&[("sec-fetch-site", "cross-site")]), false));
        assert!(cross_site(&req(&[("sec-fetch-site", "same-site")]), false));
        assert!(!cross_site(
            &req(&[("origin", "http://127.0.0.1:9090")]),
            false
        ));
        assert!(
            cross_site(&req(&[("origin", "http://127.0.0.1:9090")]), true),
            "scheme"
        );
        assert!(cross_site(
            &req(&[("origin", "http://evil.example")]),
            false
        ));
        assert!(cross_site(&req(&[("origin", "null")]), false));
        assert!(
            !cross_site(
                &req(&[("sec-fetch-site", "same-origin"), ("origin", "null")]),
                false
            ),
            "fetch metadata decides when the browser sends it"
        );
    }
}
