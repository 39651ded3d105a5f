//! The `file` sink: one JSON line per event, fsynced before the acknowledgement.
//!
//! A dedicated writer thread does group commit: it takes every line waiting in its (bounded)
//! queue, writes them with one `write` and one `fdatasync`, then acknowledges each. Many
//! concurrent requests therefore share one fsync instead of queueing for one each. If a write
//! fails half-way, the file is truncated back to where the batch began, so no partial line is
//! left behind for a retry to append after.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::preflight::Check;
use super::{BuildError, Outgoing, Receipt, Sink, SinkError, SinkSpec};
use crate::validate::Issues;

sink_settings! {
    "file",
    /// Appends each event as one JSON line and fsyncs before acknowledging.
    pub struct FileSinkSettings {
        /// Relative paths are relative to the working directory.
        pub path: PathBuf,
    }
}

#[async_trait]
impl SinkSpec for FileSinkSettings {
    fn validate(&self, path: &str, issues: &mut Issues) {
        if self.path.as_os_str().is_empty() {
            issues.error(format!("{path}.path"), "must not be empty");
        }
    }

    async fn build(&self) -> Result<Arc<dyn Sink>, BuildError> {
        let sink = FileSink::open(self).map_err(|source| BuildError::Io {
            context: format!("cannot open {}", self.path.display()),
            source,
        })?;
        Ok(Arc::new(sink))
    }
}

impl FileSinkSettings {
    /// `validate --connect`: would the sink be able to append here? The file exists and opens
    /// for appending (opened without writing), or the nearest existing directory on its path
    /// takes a new file: a uniquely named probe file is created there and removed at once,
    /// because permission bits alone do not tell (ACLs, read-only mounts). Nothing else is
    /// created: startup creates the missing directories.
    pub fn preflight(&self) -> Check {
        let path = &self.path;
        if path.exists() {
            return match OpenOptions::new().append(true).open(path) {
                Ok(f) => match f.metadata() {
                    Ok(m) if m.is_dir() => Check::missing("is a directory"),
                    Ok(m) => Check::ok(format!("appends to the existing file ({} bytes)", m.len())),
                    Err(e) => Check::missing(format!("cannot read its metadata: {e}")),
                },
                Err(e) => Check::missing(format!("cannot open it for appending: {e}")),
            };
        }
        let mut dir = path.parent().map(PathBuf::from).unwrap_or_default();
        if dir.as_os_str().is_empty() {
            dir = PathBuf::from(".");
        }
        let mut to_create = Vec::new();
        while !dir.exists() {
            to_create.push(dir.clone());
            match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => dir = p.to_path_buf(),
                _ => dir = PathBuf::from("."),
            }
        }
        if !dir.is_dir() {
            return Check::missing(format!("{} is not a directory", dir.display()));
        }
        let probe = dir.join(format!(".callbridge-preflight-{}", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&probe) {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
                Check::ok(match to_create.last() {
                    None => format!(
                        "{} is writable; the file is created at startup",
                        dir.display()
                    ),
                    Some(top) => format!(
                        "{} is writable; startup creates {} and the file",
                        dir.display(),
                        top.display()
                    ),
                })
            }
            Err(e) => Check::missing(format!("cannot create a file in {}: {e}", dir.display())),
        }
    }
}

/// How many lines may wait for the writer; beyond it, publishers wait (back-pressure).
const QUEUE_DEPTH: usize = 4096;

struct WriteRequest {
    line: Bytes,
    reply: oneshot::Sender<Result<u64, Arc<std::io::Error>>>,
}

pub struct FileSink {
    display: String,
    tx: mpsc::Sender<WriteRequest>,
    alive: Arc<AtomicBool>,
}

impl FileSink {
    /// Opens (creating parent directories and the file) at startup, so a bad path fails fast.
    fn open(settings: &FileSinkSettings) -> std::io::Result<FileSink> {
        let path = &settings.path;
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)?;
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let alive = Arc::new(AtomicBool::new(true));
        let alive2 = alive.clone();
        std::thread::Builder::new()
            .name(format!("file-sink-{}", settings.name))
            .spawn(move || {
                writer_loop(file, len, rx);
                alive2.store(false, Ordering::Release);
            })?;
        Ok(FileSink {
            display: path.display().to_string(),
            tx,
            alive,
        })
    }
}

fn writer_loop(mut file: File, mut len: u64, mut rx: mpsc::Receiver<WriteRequest>) {
    let is_regular = file.metadata().map(|m| m.is_file()).unwrap_or(false);
    let mut batch: Vec<WriteRequest> = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(req) => batch.push(req),
                Err(_) => break,
            }
        }
        buf.clear();
        let mut offsets = Vec::with_capacity(batch.len());
        for req in &batch {
            offsets.push(len + buf.len() as u64);
            buf.extend_from_slice(&req.line);
            buf.push(b'\n');
        }
        let result = file.write_all(&buf).and_then(|()| file.sync_data());
        match result {
            Ok(()) => {
                len += buf.len() as u64;
                for (req, off) in batch.drain(..).zip(offsets) {
                    let _ = req.reply.send(Ok(off));
                }
            }
            Err(e) => {
                if is_regular {
                    // Remove whatever part of the batch reached the file.
                    let _ = file.set_len(len);
                }
                let e = Arc::new(e);
                for req in batch.drain(..) {
                    let _ = req.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SharedIoError(Arc<std::io::Error>);

#[async_trait]
impl Sink for FileSink {
    async fn publish(&self, event: &Outgoing) -> Result<Receipt, SinkError> {
        let (reply, rx) = oneshot::channel();
        let gone = || SinkError::NotConnected(format!("writer for {} has stopped", self.display));
        self.tx
            .send(WriteRequest {
                line: event.structured.clone(),
                reply,
            })
            .await
            .map_err(|_| gone())?;
        match rx.await.map_err(|_| gone())? {
            Ok(offset) => Ok(Receipt::File {
                path: self.display.clone(),
                offset,
            }),
            Err(e) => Err(SinkError::Io {
                context: format!("cannot append to {}", self.display),
                source: std::io::Error::new(e.kind(), SharedIoError(e)),
            }),
        }
    }

    fn destination(&self, _event: &crate::event::Event) -> String {
        self.display.clone()
    }

    fn is_ready(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }
}
