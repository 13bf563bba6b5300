use super::artifact::unpack_once;
use super::records::process_start_time;
use super::*;
use std::os::unix::process::ExitStatusExt;

fn tgz(members: &[(&str, &[u8], u32, tar::EntryType)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (name, data, mode, kind) in members {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_size(data.len() as u64);
        header.set_mode(*mode);
        if *kind == tar::EntryType::Symlink {
            header.set_link_name("/etc/passwd").unwrap();
        }
        builder.append_data(&mut header, name, *data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

#[test]
fn artifacts_unpack_read_only_and_refuse_unsafe_entries() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.tar.gz");
    std::fs::write(
        &good,
        tgz(&[
            (
                "pkg/bin/run",
                b"#!/bin/sh\n",
                0o777,
                tar::EntryType::Regular,
            ),
            ("pkg/README", b"hi", 0o644, tar::EntryType::Regular),
        ]),
    )
    .unwrap();
    let target = dir.path().join("a/sha");
    unpack_once(&good, &target, "sha", 1).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&target.join("bin/run")), 0o555);
    assert_eq!(mode(&target.join("README")), 0o444);
    assert_eq!(mode(&target.join("bin")), 0o555);
    assert_eq!(mode(&target), 0o555);
    // Nothing left beside it.
    assert_eq!(std::fs::read_dir(dir.path().join("a")).unwrap().count(), 1);

    let bad = |members: &[(&str, &[u8], u32, tar::EntryType)], strip: u32| {
        let path = dir.path().join("bad.tar.gz");
        std::fs::write(&path, tgz(members)).unwrap();
        let target = dir.path().join(format!("b/{}", crate::util::hex_id()));
        match unpack_once(&path, &target, "x", strip) {
            Err(CanvasError::Backend(m)) => m,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        bad(&[("link", b"", 0o777, tar::EntryType::Symlink)], 0),
        "backend artifact contains an unsafe archive entry"
    );
    assert_eq!(
        bad(
            &[
                ("a", b"1", 0o644, tar::EntryType::Regular),
                ("./a", b"2", 0o644, tar::EntryType::Regular)
            ],
            0
        ),
        "backend artifact contains an unsafe archive entry"
    );
    assert_eq!(
        bad(&[("top", b"1", 0o644, tar::EntryType::Regular)], 1),
        "backend artifact contains no files after stripping"
    );
    std::fs::write(dir.path().join("junk.tar.gz"), b"not a tarball").unwrap();
    let e = unpack_once(
        &dir.path().join("junk.tar.gz"),
        &dir.path().join("c/x"),
        "x",
        0,
    );
    assert!(
        matches!(&e, Err(CanvasError::Backend(m)) if m == "backend artifact is not a valid gzip tar archive"),
        "{e:?}"
    );
}

#[test]
fn run_records_of_a_dead_server_get_their_backends_killed() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let installed = Arc::new(Installed::new(&root.join("p")));
    let backends = Backends::new(installed, &root.join("backends"));
    let artifact = root.join("backends/artifacts/app/abc");
    std::fs::create_dir_all(&artifact).unwrap();
    let spawn = |arg0: &Path| {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg("sleep 300").arg(arg0);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.spawn().unwrap()
    };
    // A dead server: a finished process's pid and a start time that cannot match.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let backend = spawn(&artifact.join("run"));
    let mut stranger = spawn(&root.join("elsewhere/run"));
    std::thread::sleep(Duration::from_millis(100));
    let run_dir = root.join("backends/run");
    for (child, name) in [(&backend, "app"), (&stranger, "app")] {
        let pgid = child.id();
        let record = json!({"name": name, "pgid": pgid,
            "start_time": process_start_time(pgid).unwrap(), "server_pid": dead_pid,
            "server_start_time": 1});
        std::fs::create_dir_all(&run_dir).unwrap();
        std::fs::write(run_dir.join(format!("{pgid}.json")), record.to_string()).unwrap();
    }
    std::fs::write(run_dir.join("junk.json"), "{").unwrap();
    // A record whose server still runs (this process) is left alone.
    let me = std::process::id();
    let mine = json!({"name": "app", "pgid": 1, "start_time": 1, "server_pid": me,
        "server_start_time": process_start_time(me).unwrap()});
    std::fs::write(run_dir.join("1.json"), mine.to_string()).unwrap();

    // Reaped as soon as it dies, as init reaps a dead server's orphans.
    let mut backend = backend;
    let waiter = std::thread::spawn(move || backend.wait().unwrap());
    let started = Instant::now();
    assert_eq!(backends.reap_orphans(), 1);
    assert!(started.elapsed() < STOP_TIMEOUT, "SIGTERM was enough");
    let status = waiter.join().unwrap();
    assert!(status.signal().is_some(), "the backend was killed");
    assert!(
        stranger.try_wait().unwrap().is_none(),
        "an unrelated process survived"
    );
    let left: Vec<String> = std::fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["1.json"]);
    let _ = stranger.kill();
    let _ = stranger.wait();
}

#[test]
fn the_log_buffer_keeps_the_newest_bytes() {
    let mut logs = LogBuffer::default();
    for _ in 0..40 {
        logs.push(vec![b'x'; 8192]);
    }
    assert!(logs.bytes <= MAX_LOG_BYTES);
    assert!(logs.truncated);
    assert_eq!(logs.chunks.len(), MAX_LOG_BYTES / 8192);
}
