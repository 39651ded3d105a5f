//! The floor under the bridge's own cost: a bare actix-web handler that reads the same body and
//! parses the same JSON, then answers 200 — no auth, no normalisation, no ledger, no sink. The
//! issue's target is bridge-null ≥ 0.5 × this, with the same load generator.
//!
//! It runs as a child process (this harness binary re-executed with `--serve-bare`) so it never
//! shares a runtime with the load generator, like the bridge.

use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

/// The child's entry point: serves until killed; prints `listening <port>` once bound.
pub fn serve() -> Result<()> {
    use actix_web::{web, App, HttpResponse, HttpServer};
    actix_web::rt::System::new().block_on(async {
        let server = HttpServer::new(|| {
            App::new().route(
                "/callback",
                web::post().to(|body: web::Bytes| async move {
                    match serde_json::from_slice::<serde_json::Value>(&body) {
                        Ok(v) if v.get("data").is_some() => {
                            HttpResponse::Ok().json(serde_json::json!({"status": "accepted"}))
                        }
                        _ => HttpResponse::BadRequest().finish(),
                    }
                }),
            )
        })
        // The bridge's default: one worker per core.
        .workers(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .bind(("127.0.0.1", 0))?;
        let port = server.addrs()[0].port();
        println!("listening {port}");
        server.run().await
    })?;
    Ok(())
}

pub struct Bare {
    child: Child,
    pub port: u16,
}

impl Bare {
    pub fn start() -> Result<Bare> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--serve-bare")
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the bare server")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("no port in {line:?}"))?;
        Ok(Bare { child, port })
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
