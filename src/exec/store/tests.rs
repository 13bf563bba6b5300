use super::*;

/// Inodes of the files in `dir` whose names start with `prefix`.
fn inodes(dir: &Path, prefix: &str) -> BTreeSet<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.metadata().expect("metadata").ino())
        .collect()
}

/// A `BashCommand` event running `echo <i>`.
pub(crate) fn command(i: usize, stamp: &Stamp) -> BashEvent {
    BashEvent::Command(super::super::model::BashCommand {
        command: format!("echo {i}"),
        cwd: None,
        timeout: 1,
        id: format!("{i:032x}"),
        timestamp: stamp.timestamp.clone(),
        kind: "BashCommand".into(),
    })
}

#[test]
fn names_parse_like_the_reference() {
    let (k, c, id) = parse_name("20261125112109177871_BashOutput_abc_def").expect("output");
    assert_eq!((k, c, id), (BashEventKind::Output, Some("abc"), "def"));
    let (k, c, id) = parse_name("20261125112109177871_BashCommand_abc").expect("command");
    assert_eq!((k, c, id), (BashEventKind::Command, None, "abc"));
    assert!(parse_name("2026_BashCommand_abc").is_none());
    assert!(parse_name("20261125112109177871_Other_abc").is_none());
    assert!(parse_name("20261125112109177871_BashOutput_abc").is_none());
}

#[test]
fn stamps_strictly_increase() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        Store::open(dir.path().to_owned(), tokio::sync::broadcast::channel(1).0).expect("open");
    let mut last = String::new();
    for _ in 0..1000 {
        let s = store.stamp();
        assert!(s.name_prefix > last);
        assert!(s.timestamp.ends_with('Z'));
        last = s.name_prefix;
    }
}

#[test]
fn stamps_follow_stored_events_written_under_a_later_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Written before a restart by a clock 70 years ahead of this one.
    let future = "20960102030405123456_BashCommand_0123456789abcdef0123456789abcdef";
    std::fs::write(dir.path().join(future), "{}").expect("event file");
    let store =
        Store::open(dir.path().to_owned(), tokio::sync::broadcast::channel(1).0).expect("open");
    let first = store.stamp();
    assert!(
        first.name_prefix.as_str() > &future[..20],
        "{}",
        first.name_prefix
    );
    assert_eq!(first.name_prefix, "20960102030405123457");
    assert_eq!(first.timestamp, "2096-01-02T03:04:05.123457Z");
}

/// The index and the directory hold at most the configured number of events, the newest;
/// reopening with a smaller limit deletes the oldest at start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_events_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let event_files = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    };
    let (tx, _rx) = tokio::sync::broadcast::channel(1024);
    let store = Arc::new(Store::open_keeping(dir.path().to_owned(), tx.clone(), 50).expect("open"));
    let mut names = Vec::new();
    for i in 0..120 {
        let (name, _) = store
            .append(|stamp| command(i, stamp))
            .await
            .expect("append");
        names.push(name.to_string());
    }
    assert_eq!(lock(&store.index).by_name.len(), 50);
    assert_eq!(event_files(dir.path()), names[70..]);
    assert!(store.name_of(&format!("{:032x}", 10)).is_none());
    drop(store);
    let store = Store::open_keeping(dir.path().to_owned(), tx, 30).expect("reopen");
    assert_eq!(lock(&store.index).by_name.len(), 30);
    assert_eq!(event_files(dir.path()), names[90..]);
}

/// A reader that took names before the retention limit deleted them gets nothing for them,
/// quietly (a normal race under load); an event file that is not JSON is skipped with a
/// warning. Both leave the index; batches read in order up to their byte budget.
#[tokio::test]
async fn reads_of_deleted_or_broken_events_are_skipped_and_only_broken_ones_warned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tx, _rx) = tokio::sync::broadcast::channel(16);
    let store = Arc::new(Store::open_keeping(dir.path().to_owned(), tx, 10).expect("open"));
    let mut names = Vec::new();
    for i in 0..10 {
        let (name, _) = store.append(|s| command(i, s)).await.expect("append");
        names.push(name);
    }
    let one = store.load_json_many(&names, 1).await;
    assert_eq!(one.len(), 1, "a budget of one byte reads one event");
    let all = store.load_json_many(&names, usize::MAX).await;
    assert!(all.iter().all(Option::is_some) && all.len() == 10);

    let capture = crate::util::test_log::Capture::start(tracing::Level::DEBUG);
    // Five more events evict the five oldest, whose names this reader already holds.
    for i in 10..15 {
        store.append(|s| command(i, s)).await.expect("append");
    }
    std::fs::write(dir.path().join(&*names[7]), b"{not json").expect("break a file");
    let read = store.load_json_many(&names, usize::MAX).await;
    let gone: Vec<usize> = (0..10).filter(|&i| read[i].is_none()).collect();
    assert_eq!(gone, [0, 1, 2, 3, 4, 7]);
    let log = capture.text();
    let warned: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warned.len(), 1, "{log}");
    assert!(warned[0].contains(&*names[7]), "{log}");
    assert!(log.contains("deleted by the retention limit"), "{log}");
    assert!(store.name_of(&format!("{:032x}", 7)).is_none());
    assert_eq!(lock(&store.index).by_name.len(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_become_visible_in_name_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tx, mut rx) = tokio::sync::broadcast::channel(1024);
    let store = Arc::new(Store::open(dir.path().to_owned(), tx).expect("open"));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .append(|stamp| {
                    BashEvent::Command(super::super::model::BashCommand {
                        // every size of file, so writes finish out of order
                        command: "x".repeat((i * 7919) % 200_000),
                        cwd: None,
                        timeout: 1,
                        id: format!("{i:032x}"),
                        timestamp: stamp.timestamp.clone(),
                        kind: "BashCommand".into(),
                    })
                })
                .await
                .expect("append")
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let mut announced = Vec::new();
    while let Ok(a) = rx.try_recv() {
        let a: Announced = a;
        // Small events come with their JSON, exactly the file's content.
        if let Some(json) = &a.json {
            let on_disk = std::fs::read_to_string(dir.path().join(&*a.name)).expect("read");
            assert_eq!(**json, on_disk);
        }
        announced.push(a.name.to_string());
    }
    assert_eq!(announced.len(), 200);
    let mut sorted = announced.clone();
    sorted.sort();
    assert_eq!(announced, sorted, "announced out of name order");
    assert_eq!(lock(&store.index).by_name.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spares_are_made_ahead_of_the_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tx, _) = tokio::sync::broadcast::channel(16);
    let store = Arc::new(Store::open(dir.path().to_owned(), tx).expect("open"));
    let event_inodes = || inodes(dir.path(), "2");
    let spare_inodes = || inodes(&dir.path().join(SPARES_DIR), "");
    store.append(|s| command(0, s)).await.expect("append");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while spare_inodes().len() < SPARES_AHEAD {
        assert!(std::time::Instant::now() < deadline, "spares made ahead");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let ahead = spare_inodes();
    for i in 1..=20 {
        store.append(|s| command(i, s)).await.expect("append");
    }
    let events = event_inodes();
    assert_eq!(events.len(), 21);
    assert_eq!(
        events.intersection(&ahead).count(),
        20,
        "written into spares"
    );
    let names: Vec<Arc<str>> = lock(&store.index).by_name.keys().cloned().collect();
    for (i, name) in names.iter().enumerate() {
        let text = std::fs::read_to_string(dir.path().join(name.as_ref())).expect("read");
        assert!(text.contains(&format!("\"echo {i}\"")), "{name}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleared_files_are_reused_for_new_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || {
        let (tx, _) = tokio::sync::broadcast::channel(16);
        Arc::new(Store::open(dir.path().to_owned(), tx).expect("open"))
    };
    let event_inodes = || inodes(dir.path(), "2");
    let spare_inodes = || inodes(&dir.path().join(SPARES_DIR), "");
    let store = open();
    for i in 0..20 {
        store.append(|s| command(i, s)).await.expect("append");
    }
    let written = event_inodes();
    assert_eq!(store.clear().await.expect("clear"), 20);
    while store
        .making_spares
        .load(std::sync::atomic::Ordering::Acquire)
    {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let spares = spare_inodes();
    assert!(written.is_subset(&spares), "cleared files kept as spares");
    assert!(event_inodes().is_empty());
    assert!(lock(&store.index).by_name.is_empty());
    // A restart finds the spares; new events are written into them, whole and readable,
    // even into spares still holding a longer write that a crash left there.
    drop(store);
    for entry in std::fs::read_dir(dir.path().join(SPARES_DIR)).expect("read_dir") {
        let path = entry.expect("entry").path();
        std::fs::write(path, vec![b'x'; 10_000]).expect("stale spare");
    }
    // Leftovers of a crash and of earlier versions in the events directory go.
    for leftover in [".tmp-20261127_BashCommand_1", ".spare-7"] {
        std::fs::write(dir.path().join(leftover), "{").expect("leftover");
    }
    let store = open();
    for leftover in [".tmp-20261127_BashCommand_1", ".spare-7"] {
        assert!(!dir.path().join(leftover).exists(), "{leftover} removed");
    }
    for i in 100..130 {
        store.append(|s| command(i, s)).await.expect("append");
    }
    let events = event_inodes();
    assert_eq!(events.len(), 30);
    assert_eq!(
        events.intersection(&spares).count(),
        spares.len().min(30),
        "spares reused"
    );
    let (names, _) = store.select(&SearchQuery {
        limit: 100,
        ..SearchQuery::default()
    });
    assert_eq!(names.len(), 30);
    for (i, name) in names.iter().enumerate() {
        match store.load(name).await {
            Some(BashEvent::Command(c)) => assert_eq!(c.command, format!("echo {}", 100 + i)),
            other => panic!("{name}: {other:?}"),
        }
    }
}
