//! The file sink: the line at the receipt's byte offset, its `id` compared with the event id.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::time::Duration;

use async_trait::async_trait;

use super::{Finding, ReadError, Reader};
use crate::sinks::Receipt;

/// Longest line read back (an event is far smaller).
const MAX_LINE: u64 = 16 << 20;

/// The verdict on the copy of `expected` from the line at its offset (None: no line there).
pub fn verdict(expected: &str, line: Option<&[u8]>) -> Finding {
    let Some(line) = line else {
        return Finding::missing("the file ends before the offset");
    };
    let id = serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("id")?.as_str().map(str::to_string));
    match id {
        Some(id) if id == expected => Finding::verified(),
        Some(id) => Finding::missing(format!("another event is there ({id})")),
        None => Finding::missing("no event starts at the offset"),
    }
}

fn line_at(path: &str, offset: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut f = std::fs::File::open(path)?;
    if offset >= f.metadata()?.len() {
        return Ok(None);
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut line = Vec::new();
    BufReader::new(f)
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)?;
    Ok(Some(line))
}

pub struct FileReader;

#[async_trait]
impl Reader for FileReader {
    async fn read(
        &self,
        event_id: &str,
        receipt: &Receipt,
        _: Duration,
    ) -> Result<Finding, ReadError> {
        let Receipt::File { path, offset } = receipt else {
            return Err(ReadError::Other("not a file receipt".into()));
        };
        let (path, offset) = (path.clone(), *offset);
        let line = tokio::task::spawn_blocking(move || line_at(&path, offset))
            .await
            .map_err(|e| ReadError::Other(e.to_string()))?;
        match line {
            Ok(line) => Ok(verdict(event_id, line.as_deref())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Finding::missing("the file is gone"))
            }
            Err(e) => Err(ReadError::Other(format!("reading the file: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Verdict;

    #[test]
    fn the_line_at_the_offset_decides() {
        assert_eq!(
            verdict("e1", Some(br#"{"id":"e1","x":1}"#)).verdict,
            Verdict::Verified
        );
        assert_eq!(
            verdict("e1", Some(b"{\"id\":\"e1\"}\n")).verdict,
            Verdict::Verified
        );
        assert_eq!(
            verdict("e1", Some(br#"{"id":"e2"}"#)).verdict,
            Verdict::Missing
        );
        assert_eq!(
            verdict("e1", Some(br#"{"other":"e1"}"#)).verdict,
            Verdict::Missing
        );
        assert_eq!(
            verdict("e1", Some(b"d\":\"e1\"}")).verdict,
            Verdict::Missing
        );
        assert_eq!(verdict("e1", None).verdict, Verdict::Missing);
    }

    #[tokio::test]
    async fn a_file_reader_reads_the_line_at_the_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "{\"id\":\"a\"}\n{\"id\":\"b\"}\n").expect("write");
        let p = path.to_string_lossy().into_owned();
        let read = |id: &'static str, offset: u64| {
            let receipt = Receipt::File {
                path: p.clone(),
                offset,
            };
            async move {
                FileReader
                    .read(id, &receipt, Duration::ZERO)
                    .await
                    .expect("read")
                    .verdict
            }
        };
        assert_eq!(read("a", 0).await, Verdict::Verified);
        assert_eq!(read("b", 11).await, Verdict::Verified);
        assert_eq!(read("b", 0).await, Verdict::Missing);
        assert_eq!(read("b", 22).await, Verdict::Missing);
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(read("a", 0).await, Verdict::Missing);
    }
}
