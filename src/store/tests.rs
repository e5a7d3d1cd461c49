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
            move |txn| {
                create_in(txn, ResourceType::User, a, vec![], &actor(), now()).map(|c| c.resource)
            }
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
            .map(|c| c.resource)
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
                .map(|c| c.resource)
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
            .map(|c| c.resource)
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

/// Issue 11 (disk full): a reopen that fails because a read still holds the old
/// handle (redb's file lock) does not leave reads answering 503 until the next
/// write: the next read opens the file again once that read has ended.
#[test]
fn a_reopen_blocked_by_a_running_read_is_retried_by_the_next_read() {
    let (_d, store) = open();
    let u = user(&store, "kept");
    let running = store.snapshot().unwrap();
    // As after a failed commit: the handle is given up while the read still has it.
    let current = store.inner.slot.current().unwrap().unwrap();
    store.inner.slot.give_up(current);
    assert!(
        store.inner.slot.current().unwrap().is_none(),
        "the open must fail while the old handle is held"
    );
    drop(running);
    // No write comes: reads alone bring the file back (a few retries at most, each
    // REOPEN_RETRY apart; without them every read would fail until a write).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let snapshot = loop {
        match store.snapshot() {
            Ok(s) => break s,
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(matches!(e, StoreError::Io(_)), "{e}");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("reads did not recover: {e}"),
        }
    };
    let found = snapshot.get(ResourceType::User, &u.id).unwrap();
    assert!(found.is_some());
    assert_eq!(store.health().reopens, 1);
    drop(snapshot);
    // And writes go on on the reopened file.
    user(&store, "after");
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
/// Issue 11: after the cut-over the target token's bytes must leave the file.
/// Removing the value is not enough (redb keeps the freed pages); the rewrite into
/// a fresh file is, while writes sent during it are neither lost nor split, a
/// reader's snapshot stays valid, and the file reopens with everything.
#[test]
fn erasing_the_target_token_rewrites_the_file_without_its_bytes() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, store) = open();
    let path = dir.path().join("db.redb");
    let secret = b"target-secret-9f8e7d6c5b4a";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let in_file = || {
        let bytes = std::fs::read(&path).unwrap();
        bytes.windows(secret.len()).any(|w| w == secret)
    };
    rt.block_on(store.update_migration(|m| {
        m.target = Some("https://target.example/scim/v2".into());
        m.token = Some(crate::secret::Secret::new("target-secret-9f8e7d6c5b4a"));
    }))
    .unwrap();
    for i in 0..50 {
        user(&store, &format!("before{i}"));
    }
    // A forgotten token is still in the file.
    rt.block_on(store.update_migration(|m| m.token = None))
        .unwrap();
    assert!(
        in_file(),
        "redb keeps freed pages: the test would prove nothing"
    );
    let reader = store.snapshot().unwrap();
    // Writes sent while the rewrite runs.
    let writers: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            rt.spawn(async move {
                let a = attrs(json!({"userName": format!("during{i}")}));
                store
                    .write(move |txn| {
                        create_in(txn, ResourceType::User, a, vec![], &actor(), now())
                            .map(|c| c.resource)
                    })
                    .await
                    .map(|r| r.id)
            })
        })
        .collect();
    rt.block_on(store.erase_target_token()).unwrap();
    let during: Vec<String> = writers
        .into_iter()
        .map(|w| rt.block_on(w).unwrap().unwrap())
        .collect();
    assert!(!in_file(), "the token's bytes are still in the file");
    assert_eq!(
        reader.count(ResourceType::User).unwrap(),
        50,
        "an old snapshot reads on"
    );
    let state = store.snapshot().unwrap().migration_state().unwrap();
    assert!(state.token.is_none() && state.token_erased);
    assert_eq!(
        state.target.as_deref(),
        Some("https://target.example/scim/v2")
    );
    user(&store, "after");
    drop(reader);
    store.close();
    drop(store);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let store = Store::open(&path, &StoreOptions::default()).unwrap();
    let snap = store.snapshot().unwrap();
    assert_eq!(snap.count(ResourceType::User).unwrap(), 50 + 40 + 1);
    for id in &during {
        assert!(
            snap.get(ResourceType::User, id).unwrap().is_some(),
            "{id} lost"
        );
    }
    assert!(snap.migration_state().unwrap().token_erased);
    assert!(!dir.path().join("db.tmp").exists());
}

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
            .write_blocking(move |txn| {
                create_in(txn, ResourceType::User, a, vec![], &actor(), t).map(|c| c.resource)
            })
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

// ---- nested groups, representation versions, idempotent removals -------------------

fn at(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

fn member(id: &str) -> MemberRef {
    MemberRef {
        id: id.to_owned(),
        rt: None,
        display: None,
    }
}

fn group(store: &Store, name: &str, members: &[&str], now: Timestamp) -> StoredResource {
    let (a, m) = (
        attrs(json!({"displayName": name})),
        members.iter().map(|id| member(id)).collect::<Vec<_>>(),
    );
    store
        .write_blocking(move |txn| {
            create_in(txn, ResourceType::Group, a, m, &actor(), now).map(|c| c.resource)
        })
        .unwrap()
}

fn change_members(store: &Store, group: &str, add: &[&str], remove: &[&str], now: Timestamp) {
    let id = group.to_owned();
    let (add, remove): (Vec<MemberRef>, Vec<String>) = (
        add.iter().map(|a| member(a)).collect(),
        remove.iter().map(|r| (*r).to_owned()).collect(),
    );
    store
        .write_blocking(move |txn| {
            update_in(
                txn,
                &UpdateRequest {
                    target: target(ResourceType::Group, &id, None),
                    with_members: false,
                    actor: actor(),
                    now,
                    audit: None,
                },
                |c| {
                    Ok(Update {
                        attrs: c.attrs,
                        members: MembersChange::Delta { add, remove },
                    })
                },
            )
        })
        .unwrap();
}

fn set_attrs(
    store: &Store,
    rt: ResourceType,
    id: &str,
    a: Value,
    now: Timestamp,
) -> StoreResult<StoredResource> {
    let (id, a) = (id.to_owned(), attrs(a));
    store.write_blocking(move |txn| {
        update_in(
            txn,
            &UpdateRequest {
                target: target(rt, &id, None),
                with_members: false,
                actor: actor(),
                now,
                audit: None,
            },
            |_| {
                Ok(Update {
                    attrs: a,
                    members: MembersChange::Keep,
                })
            },
        )
    })
}

/// What a client sees of a resource: (ETag, lastModified).
fn seen(store: &Store, rt: ResourceType, id: &str) -> (String, Timestamp) {
    let snap = store.snapshot().unwrap();
    let mut r = snap.get(rt, id).unwrap().unwrap();
    snap.derive_meta(rt, &mut r).unwrap();
    (r.meta.etag(), at(&r.meta.last_modified))
}

fn groups_of(store: &Store, id: &str) -> Vec<(String, bool)> {
    groups_in(&store.snapshot().unwrap(), id)
}

/// The groups a user shows (display name, indirect) as `snap` reads them.
fn groups_in(snap: &Snapshot, id: &str) -> Vec<(String, bool)> {
    snap.references(ResourceType::User, id)
        .unwrap()
        .into_iter()
        .map(|r| (r.display.unwrap_or_default(), r.indirect))
        .collect()
}

#[test]
fn a_user_lists_direct_then_indirect_groups() {
    let (_d, store) = open();
    let u = user(&store, "u");
    let inner = group(&store, "Inner", &[&u.id], now());
    let outer = group(&store, "Outer", &[&inner.id], now());
    group(&store, "Top", &[&outer.id], now());
    assert_eq!(
        groups_of(&store, &u.id),
        [
            ("Inner".into(), false),
            ("Outer".into(), true),
            ("Top".into(), true)
        ]
    );
}

#[test]
fn nesting_cycles_end_and_each_group_is_listed_once() {
    let (_d, store) = open();
    let u = user(&store, "u");
    let a = group(&store, "A", &[&u.id], now());
    let b = group(&store, "B", &[&a.id], now());
    // B into A: A ⊃ B ⊃ A. A SCIM write refuses that (`cycles.rs`); an import of an
    // older export can still bring it, as this direct write does.
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    store
        .write_blocking(move |txn| add_member(txn, &a_id, &b_id, ResourceType::Group, None))
        .unwrap();
    // U directly in B too: still once, as direct.
    change_members(&store, &b.id, &[&u.id], &[], now());
    let mut g = groups_of(&store, &u.id);
    g.sort();
    assert_eq!(g, [("A".into(), false), ("B".into(), false)]);
}

#[test]
fn the_walk_stops_at_its_bound() {
    // A chain longer than the bound: the read stays bounded instead of walking it all.
    let (_d, store) = open();
    let u = user(&store, "u");
    let mut below = u.id.clone();
    let chain = nesting::MAX_GROUPS_PER_USER + 5;
    let ids: Vec<String> = (0..chain)
        .map(|i| new_id(Timestamp::from_unix_ms(1_800_000_000_000 + i as i64).unwrap()))
        .collect();
    store
        .write_blocking(move |txn| {
            for (i, id) in ids.iter().enumerate() {
                let g = StoredResource {
                    id: id.clone(),
                    meta: Meta {
                        created: now().to_rfc3339(),
                        last_modified: now().to_rfc3339(),
                        version: 1,
                        groups_tag: None,
                    },
                    attrs: attrs(json!({"displayName": format!("G{i}")})),
                };
                insert_new_in(&mut WriteTables::new(txn), ResourceType::Group, &g)?;
                add_member(txn, id, &below, ResourceType::Group, None)?;
                below = id.clone();
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(groups_of(&store, &u.id).len(), nesting::MAX_GROUPS_PER_USER);
}

#[test]
fn a_users_etag_follows_its_groups_and_its_last_modified_stays_its_own() {
    let (_d, store) = open();
    let u = user(&store, "u");
    let before = seen(&store, ResourceType::User, &u.id);
    assert_eq!(before.0, "W/\"1\"");
    // Every change below is a group's: the user's ETag moves (its `groups` shows
    // them), its lastModified (its own data's last change, RFC 7643 §3.1) does not.
    // Added to a group.
    let inner = group(&store, "Inner", &[], at("2026-01-02T00:00:00Z"));
    change_members(&store, &inner.id, &[&u.id], &[], at("2026-01-03T00:00:00Z"));
    let added = seen(&store, ResourceType::User, &u.id);
    assert_ne!(added.0, before.0);
    assert_eq!(added.1, before.1);
    // Its group nested into another (an indirect membership). The user's stored
    // record is not rewritten: what changes is derived when it is read, so nesting a
    // group costs nothing per member.
    let stored = |id: &str| {
        let r = store
            .snapshot()
            .unwrap()
            .get(ResourceType::User, id)
            .unwrap()
            .unwrap();
        (r.meta.version, r.meta.last_modified)
    };
    let before_nesting = stored(&u.id);
    let outer = group(&store, "Outer", &[], at("2026-01-04T00:00:00Z"));
    change_members(
        &store,
        &outer.id,
        &[&inner.id],
        &[],
        at("2026-01-05T00:00:00Z"),
    );
    let nested = seen(&store, ResourceType::User, &u.id);
    assert_eq!(stored(&u.id), before_nesting);
    assert_ne!(nested.0, added.0);
    assert_eq!(nested.1, before.1);
    // The outer group renamed.
    set_attrs(
        &store,
        ResourceType::Group,
        &outer.id,
        json!({"displayName": "Outer 2"}),
        at("2026-01-06T00:00:00Z"),
    )
    .unwrap();
    let renamed = seen(&store, ResourceType::User, &u.id);
    assert_ne!(renamed.0, nested.0);
    assert_eq!(renamed.1, before.1);
    // Un-nested: the ETag changes.
    change_members(
        &store,
        &outer.id,
        &[],
        &[&inner.id],
        at("2026-01-07T00:00:00Z"),
    );
    let unnested = seen(&store, ResourceType::User, &u.id);
    assert_ne!(unnested.0, renamed.0);
    assert_eq!(unnested.1, before.1);
    // Removed from its group, then the group deleted: never an old ETag again.
    change_members(&store, &inner.id, &[], &[&u.id], at("2026-01-08T00:00:00Z"));
    let removed = seen(&store, ResourceType::User, &u.id);
    assert_eq!(removed.1, before.1);
    for old in [&before, &added, &nested, &renamed, &unnested] {
        assert_ne!(removed.0, old.0);
    }
    // If-Match takes the derived ETag.
    let (uid, etag) = (u.id.clone(), removed.0.clone());
    store
        .write_blocking(move |txn| {
            delete_in(
                txn,
                &target(ResourceType::User, &uid, Some(etag.as_str())),
                &actor(),
                at("2026-01-09T00:00:00Z"),
            )
        })
        .unwrap();
}

#[test]
fn deleting_a_group_moves_its_members_versions() {
    let (_d, store) = open();
    let u = user(&store, "u");
    let inner = group(&store, "Inner", &[&u.id], now());
    let outer = group(&store, "Outer", &[&inner.id], now());
    let before = seen(&store, ResourceType::User, &u.id);
    let id = outer.id.clone();
    store
        .write_blocking(move |txn| {
            delete_in(
                txn,
                &target(ResourceType::Group, &id, None),
                &actor(),
                at("2026-02-01T00:00:00Z"),
            )
        })
        .unwrap();
    let after = seen(&store, ResourceType::User, &u.id);
    assert_ne!(after.0, before.0);
    // Its lastModified is its own data's, which no group deletion changes.
    assert_eq!(after.1, before.1);
    assert_eq!(groups_of(&store, &u.id), [("Inner".into(), false)]);
}

#[test]
fn a_groups_etag_changes_when_a_members_name_does() {
    let (_d, store) = open();
    let u = user(&store, "u");
    let inner = group(&store, "Inner", &[], now());
    let g = group(&store, "G", &[&u.id, &inner.id], now());
    let v0 = seen(&store, ResourceType::Group, &g.id).0;
    set_attrs(
        &store,
        ResourceType::User,
        &u.id,
        json!({"userName": "u", "displayName": "You"}),
        at("2026-03-01T00:00:00Z"),
    )
    .unwrap();
    let v1 = seen(&store, ResourceType::Group, &g.id).0;
    assert_ne!(v1, v0, "a member user's display changed");
    set_attrs(
        &store,
        ResourceType::Group,
        &inner.id,
        json!({"displayName": "Inner 2"}),
        at("2026-03-02T00:00:00Z"),
    )
    .unwrap();
    let v2 = seen(&store, ResourceType::Group, &g.id).0;
    assert_ne!(v2, v1, "a member group's name changed");
    // A change that leaves the shown name alone leaves the group's version alone.
    set_attrs(
        &store,
        ResourceType::User,
        &u.id,
        json!({"userName": "u", "displayName": "You", "title": "T"}),
        at("2026-03-03T00:00:00Z"),
    )
    .unwrap();
    assert_eq!(seen(&store, ResourceType::Group, &g.id).0, v2);
}

/// Format 3: a group's members render from the membership rows alone, which keep
/// the member's own name (or the display the client gave) and follow renames.
#[test]
fn membership_rows_keep_the_shown_name_and_follow_renames() {
    let (_d, store) = open();
    let u = user(&store, "u");
    let okta = user(&store, "okta");
    let inner = group(&store, "Inner", &[], now());
    let given = MemberRef {
        display: Some("Okta's name".into()),
        ..member(&okta.id)
    };
    let (a, m) = (
        attrs(json!({"displayName": "G"})),
        vec![member(&u.id), given, member(&inner.id)],
    );
    let g = store
        .write_blocking(move |txn| {
            create_in(txn, ResourceType::Group, a, m, &actor(), now()).map(|c| c.resource)
        })
        .unwrap();
    let shown = |store: &Store| -> Vec<(String, Option<String>)> {
        let mut v: Vec<_> = store
            .snapshot()
            .unwrap()
            .references(ResourceType::Group, &g.id)
            .unwrap()
            .into_iter()
            .map(|r| (r.id, r.display))
            .collect();
        v.sort();
        v
    };
    let expect = |names: [&str; 3]| {
        let mut v: Vec<_> = [&u.id, &okta.id, &inner.id]
            .into_iter()
            .zip(names)
            .map(|(id, n)| (id.clone(), Some(n.to_owned())))
            .collect();
        v.sort();
        v
    };
    assert_eq!(shown(&store), expect(["u", "Okta's name", "Inner"]));
    // The name is in the row itself, flagged as the member's own.
    let row = |member: &str| {
        let snap = store.snapshot().unwrap();
        let t = snap.txn.open_table(MEMBERS).unwrap();
        let v = t
            .get((g.id.as_str(), member))
            .unwrap()
            .unwrap()
            .value()
            .to_vec();
        v
    };
    assert_eq!(row(&u.id), [&[1 | OWN_NAME][..], b"u"].concat());
    assert_eq!(row(&okta.id), [&[1][..], "Okta's name".as_bytes()].concat());
    set_attrs(
        &store,
        ResourceType::User,
        &u.id,
        json!({"userName": "u", "displayName": "You"}),
        now(),
    )
    .unwrap();
    set_attrs(
        &store,
        ResourceType::User,
        &okta.id,
        json!({"userName": "okta", "displayName": "Renamed"}),
        now(),
    )
    .unwrap();
    set_attrs(
        &store,
        ResourceType::Group,
        &inner.id,
        json!({"displayName": "Inner 2"}),
        now(),
    )
    .unwrap();
    // Renames show; the display the client gave is kept.
    assert_eq!(shown(&store), expect(["You", "Okta's name", "Inner 2"]));
    // Without a displayName the userName shows again.
    set_attrs(
        &store,
        ResourceType::User,
        &u.id,
        json!({"userName": "u2"}),
        now(),
    )
    .unwrap();
    assert_eq!(shown(&store), expect(["u2", "Okta's name", "Inner 2"]));
}

#[test]
fn removing_a_non_member_is_a_no_op_that_keeps_the_version() {
    let (_d, store) = open();
    let u = user(&store, "u");
    let g = group(&store, "G", &[&u.id], now());
    let before = seen(&store, ResourceType::Group, &g.id);
    change_members(
        &store,
        &g.id,
        &[],
        &["nobody", "01000000-0000-7000-8000-000000000000"],
        now(),
    );
    assert_eq!(seen(&store, ResourceType::Group, &g.id), before);
    assert!(store.snapshot().unwrap().is_member(&g.id, &u.id).unwrap());
}

#[test]
fn user_names_equal_after_nfc_and_case_folding_conflict_look_alikes_do_not() {
    let (_d, store) = open();
    let s = user(&store, "straße@example.com");
    let create = |name: &str| {
        let a = attrs(json!({"userName": name}));
        store.write_blocking(move |txn| {
            create_in(txn, ResourceType::User, a, vec![], &actor(), now()).map(|c| c.resource)
        })
    };
    for same in ["STRASSE@example.com", "Strasse@Example.com"] {
        let e = create(same).unwrap_err();
        assert!(
            matches!(e, StoreError::Scim(ref e) if e.status == 409),
            "{same}: {e}"
        );
    }
    let e = user(&store, "Jos\u{e9}");
    assert!(
        matches!(create("jose\u{301}").unwrap_err(), StoreError::Scim(ref e) if e.status == 409)
    );
    // Look-alikes are different names: a Cyrillic а is not a Latin a.
    let cyrillic = create("\u{430}lice@example.com").unwrap();
    let latin = create("alice@example.com").unwrap();
    assert_ne!(cyrillic.id, latin.id);
    let snap = store.snapshot().unwrap();
    assert_eq!(
        snap.find_by_user_name("STRASSE@EXAMPLE.COM").unwrap(),
        Some(s.id)
    );
    assert_eq!(snap.find_by_user_name("JOSE\u{301}").unwrap(), Some(e.id));
    assert_eq!(
        snap.find_by_user_name("ALICE@example.com").unwrap(),
        Some(latin.id)
    );
}

#[test]
fn membership_changes_are_linear_in_the_request() {
    // 20,000 members added in one request, with every id twice; then all removed by
    // a replace with an empty list. Deduplication and diffing use sets: the old
    // scans of the kept list made this 20,000² comparisons.
    let (_d, store) = open();
    let ids: Vec<String> = (0..20_000u64)
        .map(|i| new_id(Timestamp::from_unix_ms(1_800_000_000_000 + i as i64).unwrap()))
        .collect();
    {
        let ids = ids.clone();
        store
            .write_blocking(move |txn| {
                for id in &ids {
                    let r = StoredResource {
                        id: id.clone(),
                        meta: Meta {
                            created: now().to_rfc3339(),
                            last_modified: now().to_rfc3339(),
                            version: 1,
                            groups_tag: None,
                        },
                        attrs: attrs(json!({"userName": id})),
                    };
                    insert_new_in(&mut WriteTables::new(txn), ResourceType::User, &r)?;
                }
                Ok(())
            })
            .unwrap();
    }
    let g = group(&store, "Big", &[], now());
    let twice: Vec<&str> = ids.iter().chain(ids.iter()).map(String::as_str).collect();
    change_members(&store, &g.id, &twice, &[], now());
    assert_eq!(
        store.snapshot().unwrap().membership_count().unwrap(),
        20_000
    );
    let id = g.id.clone();
    store
        .write_blocking(move |txn| {
            update_in(
                txn,
                &UpdateRequest {
                    target: target(ResourceType::Group, &id, None),
                    with_members: false,
                    actor: actor(),
                    now: now(),
                    audit: None,
                },
                |c| {
                    Ok(Update {
                        attrs: c.attrs,
                        members: MembersChange::Set(Vec::new()),
                    })
                },
            )
        })
        .unwrap();
    assert_eq!(store.snapshot().unwrap().membership_count().unwrap(), 0);
}

#[test]
fn the_default_cache_follows_the_file_and_the_memory() {
    use super::default_cache_bytes;
    const MIB: u64 = 1 << 20;
    // A small directory: the floor.
    assert_eq!(default_cache_bytes(MIB, Some(8 << 30)), 16 << 20);
    // A file that fits an eighth of memory is cached whole.
    assert_eq!(default_cache_bytes(300 * MIB, Some(8 << 30)), 300 << 20);
    // A 2 GiB VM gives at most 256 MiB, a large machine at most 1 GiB.
    assert_eq!(default_cache_bytes(1500 * MIB, Some(2 << 30)), 256 << 20);
    assert_eq!(default_cache_bytes(1500 * MIB, Some(64 << 30)), 1 << 30);
    // Unknown memory is taken as 1 GiB.
    assert_eq!(default_cache_bytes(1500 * MIB, None), 128 << 20);
}

fn create_named(store: &Store, name: &str) -> StoreResult<StoredResource> {
    let a = attrs(json!({ "userName": name }));
    store.write_blocking(move |txn| {
        create_in(txn, ResourceType::User, a, vec![], &actor(), now()).map(|c| c.resource)
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..Default::default()
    })]

    /// userName is unique under the caseless rule (RFC 7643 §4.1.1, issue 11): a
    /// second user whose name differs only in ASCII case or Unicode normal form is
    /// refused with 409 `uniqueness`; a name that folds differently is accepted,
    /// whatever its script (look-alikes are real names). One store per case.
    #[test]
    fn user_names_conflict_exactly_when_they_fold_to_one_name(
        name in "\\PC{1,8}", variant in 0..4usize, other in "\\PC{1,8}"
    ) {
        use unicode_normalization::UnicodeNormalization;
        let (_d, store) = open();
        create_named(&store, &name).unwrap();
        let same = match variant {
            0 => name.to_ascii_uppercase(),
            1 => name.to_ascii_lowercase(),
            2 => name.nfd().collect(),
            _ => name.nfc().collect(),
        };
        let refused = create_named(&store, &same);
        proptest::prop_assert!(
            matches!(&refused, Err(StoreError::Scim(e)) if e.status == 409),
            "{:?} after {:?}: {:?}", same, name, refused.map(|r| r.id)
        );
        let conflict = caseless(&other) == caseless(&name);
        let second = create_named(&store, &other);
        proptest::prop_assert_eq!(second.is_err(), conflict, "{:?} after {:?}", other, name);
    }
}

/// An audit entry as the SCIM edge prepares it (`app::audit::WriteAudit`).
fn entry(action: &str) -> Option<AuditOnWrite> {
    let record = AuditRecord {
        seq: 0,
        time: now(),
        actor_kind: ActorKind::Token,
        actor: "idp".into(),
        client: None,
        action: action.into(),
        resource_type: Some("User".into()),
        resource_id: None,
        resource_name: None,
        outcome: AuditOutcome::Done,
        status: Some(201),
        reason: None,
    };
    Some(AuditOnWrite {
        record,
        durable: |r| {
            assert!(r.seq > 0 && r.resource_id.is_some(), "announced as stored");
            ANNOUNCED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        },
    })
}

/// Entries announced durable by `entry`'s `durable`.
static ANNOUNCED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn audit_log(store: &Store) -> Vec<AuditRecord> {
    let mut out = Vec::new();
    store
        .snapshot()
        .unwrap()
        .audit_newest_first(|r| {
            out.push(r);
            true
        })
        .unwrap();
    out.reverse();
    out
}

#[test]
fn a_write_stores_its_audit_entry_in_its_own_transaction_and_a_refused_one_none() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (_d, store) = open();
    let alice = |name: &str| attrs(json!({"userName": name}));
    let created = rt
        .block_on(store.create(
            ResourceType::User,
            alice("alice"),
            vec![],
            actor(),
            now(),
            entry("scim.create"),
        ))
        .unwrap()
        .resource;
    // Refused (409): nothing is written, the entry neither.
    let dup = rt.block_on(store.create(
        ResourceType::User,
        alice("ALICE"),
        vec![],
        actor(),
        now(),
        entry("scim.create"),
    ));
    assert!(matches!(dup, Err(StoreError::Scim(ref e)) if e.status == 409));
    // A rename is audited with the name as it was.
    let patch = || UpdateRequest {
        target: target(ResourceType::User, &created.id, None),
        with_members: false,
        actor: actor(),
        now: now(),
        audit: entry("scim.patch"),
    };
    rt.block_on(store.update(patch(), |mut c| {
        c.attrs.insert("userName".into(), json!("alicia"));
        Ok(Update {
            attrs: c.attrs,
            members: MembersChange::Keep,
        })
    }))
    .unwrap();
    // Refused by `f` (400): no entry.
    let refused = rt.block_on(store.update(patch(), |_| Err(ScimError::invalid_value("no"))));
    assert!(refused.is_err());
    rt.block_on(store.delete(
        target(ResourceType::User, &created.id, None),
        actor(),
        now(),
        entry("scim.delete"),
    ))
    .unwrap();

    let log = audit_log(&store);
    let seen: Vec<(&str, Option<&str>, Option<&str>)> = log
        .iter()
        .map(|r| {
            (
                r.action.as_str(),
                r.resource_id.as_deref(),
                r.resource_name.as_deref(),
            )
        })
        .collect();
    let id = Some(created.id.as_str());
    assert_eq!(
        seen,
        vec![
            ("scim.create", id, Some("alice")),
            ("scim.patch", id, Some("alice")),
            ("scim.delete", id, Some("alicia")),
        ]
    );
    assert_eq!(log.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    // Only the writes that were done, each after its commit.
    assert_eq!(ANNOUNCED.load(std::sync::atomic::Ordering::Relaxed), 3);
}

/// Users `from..to` created in one transaction; their ids in ascending order.
fn users_in_one_transaction(store: &Store, from: usize, to: usize) -> Vec<String> {
    let mut ids = store
        .write_blocking(move |txn| {
            (from..to)
                .map(|i| {
                    let a = attrs(json!({"userName": format!("u{i}")}));
                    create_in(txn, ResourceType::User, a, vec![], &actor(), now())
                        .map(|c| c.resource.id)
                })
                .collect::<StoreResult<Vec<String>>>()
        })
        .unwrap();
    ids.sort();
    ids
}

#[test]
fn a_split_scan_gives_every_row_to_exactly_one_half_in_id_order() {
    let (_d, store) = open();
    let mut ids = Vec::new();
    // Around the claim size: no row, one, a batch ± 1, several batches each half.
    for n in [0, 1, 2, 63, 64, 65, 127, 128, 129, 1000] {
        ids.extend(users_in_one_transaction(&store, ids.len(), n));
        ids.sort();
        let snap = store.snapshot().unwrap();
        let (mut lower, mut upper) = (Vec::new(), Vec::new());
        let id = |r: RawResource<'_>| r.decode().map(|s| s.id);
        snap.scan_raw_halves(
            ResourceType::User,
            |r| {
                lower.push(id(r)?);
                Ok(())
            },
            |r| {
                upper.push(id(r)?);
                Ok(())
            },
        )
        .unwrap();
        let mut all = lower.clone();
        all.extend(upper.iter().cloned());
        assert_eq!(
            all, ids,
            "each of {n} rows once, in id order, the lower half's first"
        );
    }
}

#[test]
fn a_split_scan_returns_a_halfs_error() {
    let (_d, store) = open();
    users_in_one_transaction(&store, 0, 2000);
    let snap = store.snapshot().unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let seen = std::sync::atomic::AtomicUsize::new(0);
    let counted = &seen;
    let e = snap
        .scan_raw_halves(
            ResourceType::User,
            |_| {
                let _ = tx.try_send(());
                Err(StoreError::Storage("lower failed".into()))
            },
            move |_| {
                // The lower half has claimed rows before this one goes on.
                if counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                    rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
                }
                Ok(())
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("lower failed"), "{e}");
    // The upper half starts in the middle and never gets the lower half's rows.
    let seen = seen.into_inner();
    assert!(seen <= 1000, "the upper half walked {seen} rows");
}

/// The 30-s flush of tokens' last use and traffic counts is bookkeeping: committed
/// and durable, but not a change of the directory, so the rendered answers kept
/// at the change count (`app::answers`) stay valid across it; a write of a
/// resource after it counts again.
#[test]
fn bookkeeping_commits_are_not_changes_of_the_directory() {
    let (_dir, store) = open();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let hash = vec![7u8; 32];
    let record = tokens::TokenRecord {
        id: new_id(now()),
        name: "entra".into(),
        hash: hex(&hash),
        scope: tokens::Scope::ReadWrite,
        created: now(),
        expires: None,
        last_used: None,
        revoked: None,
        superseded: None,
        quiet_after_minutes: None,
    };
    let id = record.id.clone();
    rt.block_on(store.add_token(record, hash)).unwrap();
    let (before, commits) = (store.changes(), store.health().commits);
    let mut traffic = traffic::TokenTraffic::default();
    traffic.count(200, None, now());
    let used = Timestamp::parse("2026-01-01T00:00:30Z").unwrap();
    let gone = rt
        .block_on(store.record_token_use(
            vec![(id.clone(), used)],
            vec![(id.clone(), traffic.clone())],
            Some(traffic),
        ))
        .unwrap();
    assert!(gone.is_empty());
    // Committed: the use and the counts are stored...
    assert_eq!(store.health().commits, commits + 1);
    let stored = store.snapshot().unwrap().tokens().unwrap();
    assert_eq!(stored[0].last_used, Some(used));
    let counted = store.snapshot().unwrap().token_traffic().unwrap();
    assert_eq!(counted[0].1.totals.total(), 1);
    // ...and the directory did not change.
    assert_eq!(store.changes(), before);
    // A resource write is a change, and so is a token's own (its record is read by
    // no SCIM answer, but `write` does not know that: only bookkeeping is exempt).
    user(&store, "after-flush");
    assert_eq!(store.changes(), before + 1);
    rt.block_on(store.write(|_txn| Ok(()))).unwrap();
    assert_eq!(store.changes(), before + 2);
}

/// The references a user shows, read through the snapshot GETs share.
fn shared_groups_of(store: &Store, id: &str) -> Vec<(String, bool)> {
    groups_in(&store.shared_snapshot().unwrap(), id)
}

/// GETs share one snapshot while the directory does not change (issue 10): the
/// same one until a commit, which drops it; a read after an acknowledged write,
/// of a resource or of its groups (renamed, nested, left), sees the write; the
/// groups a shared snapshot keeps are those of its own state.
#[test]
fn the_shared_snapshot_lasts_until_the_next_commit() {
    let (_d, store) = open();
    let u = user(&store, "u");
    let inner = group(&store, "Inner", &[&u.id], now());
    let first = store.shared_snapshot().unwrap();
    assert!(Arc::ptr_eq(&first, &store.shared_snapshot().unwrap()));
    assert_eq!(shared_groups_of(&store, &u.id), [("Inner".into(), false)]);
    // A rename of the group: the next read is of a new snapshot, and the kept one
    // was let go by the commit (only this test holds it now).
    set_attrs(
        &store,
        ResourceType::Group,
        &inner.id,
        json!({"displayName": "Renamed"}),
        now(),
    )
    .unwrap();
    assert_eq!(
        Arc::strong_count(&first),
        1,
        "the commit dropped the shared snapshot"
    );
    assert_eq!(shared_groups_of(&store, &u.id), [("Renamed".into(), false)]);
    // The old snapshot still reads its own state, groups included.
    assert_eq!(
        first
            .references(ResourceType::User, &u.id)
            .unwrap()
            .into_iter()
            .map(|r| r.display.unwrap_or_default())
            .collect::<Vec<_>>(),
        ["Inner"]
    );
    // Nesting, and leaving.
    let outer = group(&store, "Outer", &[&inner.id], now());
    assert_eq!(
        shared_groups_of(&store, &u.id),
        [("Renamed".into(), false), ("Outer".into(), true)]
    );
    change_members(&store, &outer.id, &[], &[&inner.id], now());
    assert_eq!(shared_groups_of(&store, &u.id), [("Renamed".into(), false)]);
    change_members(&store, &inner.id, &[], &[&u.id], now());
    assert!(shared_groups_of(&store, &u.id).is_empty());
    // A bookkeeping commit is not a change of the directory, but it drops the
    // shared snapshot too (a snapshot kept across commits keeps their freed pages).
    let kept = store.shared_snapshot().unwrap();
    let before = store.changes();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(store.write_bookkeeping(|_txn| Ok(()))).unwrap();
    assert_eq!(store.changes(), before);
    assert_eq!(Arc::strong_count(&kept), 1);
    assert!(!Arc::ptr_eq(&kept, &store.shared_snapshot().unwrap()));
}

/// A shared snapshot never holds on to a handle that is given up after a failure:
/// the reopen is not blocked by it (as by a running read, above).
#[test]
fn a_given_up_handle_is_not_kept_by_the_shared_snapshot() {
    let (_d, store) = open();
    let u = user(&store, "kept");
    drop(store.shared_snapshot().unwrap());
    let current = store.inner.slot.current().unwrap().unwrap();
    store.inner.slot.give_up(current);
    assert!(
        store.inner.slot.current().unwrap().is_some(),
        "nothing else held the old handle: reopened at once"
    );
    assert_eq!(store.health().reopens, 1);
    let s = store.shared_snapshot().unwrap();
    assert!(s.get(ResourceType::User, &u.id).unwrap().is_some());
}
