//! Golden tests: each seed payload in tests/fixtures → the expected canonical event.
//!
//! `*.payload.json` is what the sender posts, `*.event.json` the event we must emit for it
//! (received at a fixed time, with the query string in `*.query` if present). After an
//! intentional change, regenerate with `BLESS=1 cargo test --test it golden` and review the diff.

use std::collections::BTreeMap;
use std::path::Path;

use callbridge::event::{normalize, EventSettings};
use serde_json::Value;

const RECEIVED_AT: &str = "2026-01-01T00:00:00Z";

#[test]
fn every_fixture_normalises_to_its_golden_event() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let bless = std::env::var_os("BLESS").is_some();
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".payload.json") else {
            continue;
        };
        let payload: Value =
            serde_json::from_str(&std::fs::read_to_string(entry.path()).unwrap()).unwrap();
        let query = std::fs::read_to_string(dir.join(format!("{stem}.query"))).unwrap_or_default();
        let params: BTreeMap<String, String> = serde_urlencoded::from_str(query.trim()).unwrap();
        let event = normalize(
            &payload,
            params,
            &EventSettings::default(),
            RECEIVED_AT.into(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let actual = serde_json::to_value(&event).unwrap();
        let golden_path = dir.join(format!("{stem}.event.json"));
        if bless {
            std::fs::write(
                &golden_path,
                serde_json::to_string_pretty(&actual).unwrap() + "\n",
            )
            .unwrap();
        }
        let golden: Value =
            serde_json::from_str(&std::fs::read_to_string(&golden_path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (run with BLESS=1 to create)",
                    golden_path.display()
                )
            }))
            .unwrap();
        assert_eq!(
            actual,
            golden,
            "{stem}: normalised event differs from {}",
            golden_path.display()
        );
        checked += 1;
    }
    assert!(
        checked >= 4,
        "expected the seed fixtures, checked {checked}"
    );
}
