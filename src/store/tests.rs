use super::*;
use serde_json::json;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db.redb"), &StoreOptions::default()).unwrap();
    (dir, store)
}

fn attrs(v: Value) -> Attributes {
    v.as_object().unwrap().clone()
}

fn now() -> Timestamp {
    Timestamp::parse("2026-01-01T00:00:00Z").unwrap()
}

fn target(rt: ResourceType, id: &str, if_match: Option<&str>) -> Target {
    Target {
        rt,
        id: id.to_owned(),
        if_match: if_match.map(str::to_owned),
    }
}

fn actor() -> Actor {
    Actor::system("test")
}

fn user(store: &Store, name: &str) -> StoredResource {
    store
        .write_blocking({
            let a = attrs(
                json!({"userName": name, "emails": [{"value": format!("{name}@example.com")}]}),
            );
            move |txn| create_in(txn, ResourceType::User, a, vec![], &actor(), now())
        })
        .unwrap()
}

#[test]
fn ids_are_time_ordered_uuid_v7() {
    let t = Timestamp::from_unix_ms(1_700_000_000_000).unwrap();
    let a = new_id(t);
    let b = new_id(Timestamp::from_unix_ms(1_700_000_000_001).unwrap());
    assert!(a < b);
    assert_eq!(a.len(), 36);
    assert_eq!(&a[14..15], "7");
    // Within one millisecond, too.
    let same: Vec<String> = (0..100).map(|_| new_id(t)).collect();
    assert!(same.windows(2).all(|w| w[0] < w[1]));
    let parsed = uuid::Uuid::parse_str(&a).unwrap();
    assert_eq!(parsed.get_version_num(), 7);
    assert_eq!(a, a.to_lowercase());
}

#[test]
fn user_name_is_unique_case_insensitively_and_indexed() {
    let (_d, store) = open();
    let u = user(&store, "Alice");
    let err = store
        .write_blocking(|txn| {
            create_in(
                txn,
                ResourceType::User,
                attrs(json!({"userName": "ALICE"})),
                vec![],
                &actor(),
                now(),
            )
        })
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Scim(ref e) if e.status == 409),
        "{err}"
    );
    let snap = store.snapshot().unwrap();
    assert_eq!(snap.find_by_user_name("aLiCe").unwrap(), Some(u.id.clone()));
    assert_eq!(
        snap.find_users_by_email("ALICE@example.com").unwrap(),
        vec![u.id]
    );
    assert_eq!(snap.count(ResourceType::User).unwrap(), 1);
}

#[test]
fn deleting_a_user_removes_its_memberships() {
    let (_d, store) = open();
    let u = user(&store, "bob");
    let g = store
        .write_blocking({
            let m = vec![MemberRef {
                id: u.id.clone(),
                rt: None,
                display: None,
            }];
            move |txn| {
                create_in(
                    txn,
                    ResourceType::Group,
                    attrs(json!({"displayName": "Eng"})),
                    m,
                    &actor(),
                    now(),
                )
            }
        })
        .unwrap();
    let snap = store.snapshot().unwrap();
    assert!(snap.is_member(&g.id, &u.id).unwrap());
    assert_eq!(
        snap.references(ResourceType::User, &u.id).unwrap()[0]
            .display
            .as_deref(),
        Some("Eng")
    );
    drop(snap);
    let uid = u.id.clone();
    store
        .write_blocking(move |txn| {
            delete_in(
                txn,
                &target(ResourceType::User, &uid, None),
                &actor(),
                now(),
            )
        })
        .unwrap();
    let snap = store.snapshot().unwrap();
    assert!(snap
        .references(ResourceType::Group, &g.id)
        .unwrap()
        .is_empty());
    assert_eq!(
        snap.get(ResourceType::Group, &g.id)
            .unwrap()
            .unwrap()
            .meta
            .version,
        2
    );
    assert!(snap.find_by_user_name("bob").unwrap().is_none());
}

#[test]
fn unknown_member_is_refused_and_nothing_is_written() {
    let (_d, store) = open();
    let err = store
        .write_blocking(|txn| {
            let m = vec![MemberRef {
                id: "nope".into(),
                rt: None,
                display: None,
            }];
            create_in(
                txn,
                ResourceType::Group,
                attrs(json!({"displayName": "X"})),
                m,
                &actor(),
                now(),
            )
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Scim(ref e) if e.status == 400));
    assert_eq!(
        store
            .snapshot()
            .unwrap()
            .count(ResourceType::Group)
            .unwrap(),
        0
    );
}

#[test]
fn if_match_mismatch_is_a_precondition_failure() {
    let (_d, store) = open();
    let u = user(&store, "carol");
    let id = u.id.clone();
    let err = store
        .write_blocking(move |txn| {
            delete_in(
                txn,
                &target(ResourceType::User, &id, Some("W/\"7\"")),
                &actor(),
                now(),
            )
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Scim(ref e) if e.status == 412));
    let id = u.id.clone();
    store
        .write_blocking(move |txn| {
            delete_in(
                txn,
                &target(ResourceType::User, &id, Some("W/\"1\"")),
                &actor(),
                now(),
            )
        })
        .unwrap();
}

#[test]
fn writes_survive_reopen_and_format_version_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.redb");
    let id = {
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        let id = user(&store, "dave").id;
        store.close();
        id
    };
    let store = Store::open(&path, &StoreOptions::default()).unwrap();
    assert!(store
        .snapshot()
        .unwrap()
        .get(ResourceType::User, &id)
        .unwrap()
        .is_some());
    store
        .write_blocking(|txn| {
            txn.open_table(SETTINGS)?
                .insert(FORMAT_KEY, 99u32.to_le_bytes().as_slice())?;
            Ok(())
        })
        .unwrap();
    store.close();
    drop(store);
    let err = Store::open(&path, &StoreOptions::default()).err().unwrap();
    assert!(matches!(err, StoreError::Format(_)), "{err}");
}

#[test]
fn events_record_each_write() {
    let (_d, store) = open();
    user(&store, "erin");
    user(&store, "frank");
    let ev = store.snapshot().unwrap().recent_events(10).unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].seq, 2);
    assert_eq!(ev[1].op, EventOp::Create);
    // Stored as the word, as before the enum.
    let stored: Value = serde_json::to_value(&ev[1]).unwrap();
    assert_eq!(stored["op"], "create");
    assert_eq!(
        serde_json::from_value::<Event>(stored).unwrap().op,
        EventOp::Create
    );
}

#[test]
fn a_panicking_job_fails_alone_and_the_writer_survives() {
    let (_d, store) = open();
    let err = store
        .write_blocking(|_txn| -> StoreResult<()> { panic!("bug in a write operation") })
        .unwrap_err();
    assert!(matches!(err, StoreError::Storage(_)), "{err}");
    // The writer thread is still there and the next write is durable.
    let u = user(&store, "after-panic");
    assert!(store
        .snapshot()
        .unwrap()
        .get(ResourceType::User, &u.id)
        .unwrap()
        .is_some());
}

/// Issue 11: a backup holds everything but the push target's token.
#[test]
fn backup_leaves_out_the_push_targets_token_and_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, store) = open();
    user(&store, "ada");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(store.update_migration(|m| {
        m.target = Some("https://target.example/scim/v2".into());
        m.token = Some(crate::secret::Secret::new("target-secret-123"));
    }))
    .unwrap();
    let out = dir.path().join("backup.redb");
    store.backup_to(&out).unwrap();
    assert_eq!(
        store
            .snapshot()
            .unwrap()
            .migration_state()
            .unwrap()
            .token
            .map(|t| t.expose().to_owned()),
        Some("target-secret-123".to_owned()),
        "the live database keeps it"
    );
    store.close();
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let bytes = std::fs::read(&out).unwrap();
    assert!(
        !bytes.windows(17).any(|w| w == b"target-secret-123"),
        "the token's bytes are in the backup file"
    );
    let copy = Store::open(&out, &StoreOptions::default()).unwrap();
    let state = copy.snapshot().unwrap().migration_state().unwrap();
    assert_eq!(
        state.target.as_deref(),
        Some("https://target.example/scim/v2")
    );
    assert!(state.token.is_none());
    assert_eq!(
        copy.snapshot().unwrap().count(ResourceType::User).unwrap(),
        1
    );
}

/// Issue 11: change events are kept by age and count, never the newest (sequence
/// numbers continue from it) and never those the migration mirror has not sent.
#[test]
fn event_retention_by_age_and_count_spares_the_newest_and_the_unsent() {
    let (_dir, store) = open();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let day = |d: i64| now().checked_add(time::Duration::days(d)).unwrap();
    let create = |i: i64| {
        let t = day(i);
        let a = attrs(json!({"userName": format!("u{i}")}));
        store
            .write_blocking(move |txn| create_in(txn, ResourceType::User, a, vec![], &actor(), t))
            .unwrap();
    };
    for i in 0..10 {
        create(i);
    }
    let seqs = |s: &Store| -> Vec<u64> {
        let events = s.snapshot().unwrap().events_after(0, 100).unwrap();
        events.iter().map(|e| e.seq).collect()
    };
    let days = |n: u64| std::time::Duration::from_secs(n * 86_400);
    assert_eq!(seqs(&store), (1..=10).collect::<Vec<_>>());
    // By age: five days kept at day 10.
    assert_eq!(
        rt.block_on(store.prune_events(day(10), days(5), 1_000_000))
            .unwrap(),
        5
    );
    assert_eq!(seqs(&store), (6..=10).collect::<Vec<_>>());
    // By count.
    assert_eq!(
        rt.block_on(store.prune_events(day(10), days(1000), 3))
            .unwrap(),
        2
    );
    assert_eq!(seqs(&store), vec![8, 9, 10]);
    // Everything old: the newest stays, and the next event continues the sequence.
    assert_eq!(
        rt.block_on(store.prune_events(day(1000), days(1), 1_000_000))
            .unwrap(),
        2
    );
    assert_eq!(seqs(&store), vec![10]);
    create(11);
    assert_eq!(seqs(&store), vec![10, 11]);
    // A mirror that has sent up to 11 keeps 12 and 13, however old.
    create(12);
    create(13);
    rt.block_on(store.update_migration(|m| {
        m.phase = Phase::Mirroring;
        m.mirror_from = 11;
    }))
    .unwrap();
    assert_eq!(
        rt.block_on(store.prune_events(day(1000), days(1), 1))
            .unwrap(),
        2
    );
    assert_eq!(seqs(&store), vec![12, 13]);
    // The users themselves are untouched.
    assert_eq!(
        store.snapshot().unwrap().count(ResourceType::User).unwrap(),
        13
    );
}
