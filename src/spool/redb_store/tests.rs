use super::*;

/// Writes queued while a commit is under way go out together in the next one.
#[tokio::test]
async fn writes_queued_during_a_commit_share_the_next_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("s.redb")).unwrap();
    // Hold the write lock, as a long commit would: the writer waits for it.
    let db = current(&store.db, &store.path).unwrap();
    let blocker = db.begin_write().unwrap();
    let pending: Vec<_> = (0..100u64)
        .map(|seq| store.write(Table::Entries, "s", seq, vec![seq as u8; 10]))
        .collect();
    drop(blocker);
    for p in pending {
        p.await.unwrap();
    }
    assert!(
        store.commits() <= 3,
        "100 queued writes took {} commits (open's own commit counts one)",
        store.commits()
    );
    let mut seen = Vec::new();
    store.recover(&mut |_, seq, _| seen.push(seq)).unwrap();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_take_out_frees_the_entry_and_can_dead_letter_it_in_the_same_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("s.redb")).unwrap();
    store
        .write(Table::Entries, "s", 1, vec![1; 7])
        .await
        .unwrap();
    store
        .write(Table::Entries, "s", 2, vec![2; 5])
        .await
        .unwrap();
    let freed = store
        .take_out(
            "s",
            1,
            Some(Box::new(|raw: &[u8]| raw.iter().rev().copied().collect())),
        )
        .await
        .unwrap();
    assert_eq!(freed, 7);
    assert_eq!(store.take_out("s", 99, None).await.unwrap(), 0);
    assert_eq!(store.oldest("s").unwrap(), Some((2, vec![2; 5])));
    let mut dead = Vec::new();
    store
        .dead(&mut |s, q, r| dead.push((s.to_string(), q, r.to_vec())))
        .unwrap();
    assert_eq!(dead, vec![("s".to_string(), 1, vec![1; 7])]);
    let tally = store.tally().unwrap();
    assert_eq!(tally.len(), 1);
    assert_eq!(
        (
            tally[0].1.depth,
            tally[0].1.bytes,
            tally[0].1.dead,
            tally[0].1.oldest.clone()
        ),
        (1, 5, 1, Some(vec![2; 5]))
    );
}
