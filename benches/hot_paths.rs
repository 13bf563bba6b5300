//! Criterion micro-benchmarks of the server's hot paths, without HTTP: bash event
//! serialisation, running a command through the bash service (spawn + events persisted),
//! output chunking of a large output, and search over 10,000 stored bash events.

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures::StreamExt;

use agent_server::exec::{
    BashCommand, BashEvent, BashEventKind, BashOutput, BashService, ExecuteBashRequest, SearchQuery,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn output(stdout_len: usize) -> BashEvent {
    BashEvent::Output(BashOutput {
        id: uuid::Uuid::new_v4().simple().to_string(),
        timestamp: "2026-11-25T11:21:09.170846Z".into(),
        command_id: uuid::Uuid::new_v4().simple().to_string(),
        order: 3,
        exit_code: Some(0),
        stdout: Some("x".repeat(stdout_len)),
        stderr: None,
        kind: "BashOutput".into(),
    })
}

fn serialization(c: &mut Criterion) {
    let mut g = c.benchmark_group("bash_event_json");
    for len in [1024usize, 1 << 20] {
        let ev = output(len);
        let bytes = serde_json::to_vec(&ev).expect("json");
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(format!("serialize_{len}"), |b| {
            b.iter(|| serde_json::to_vec(std::hint::black_box(&ev)).expect("json"))
        });
        g.bench_function(format!("parse_{len}"), |b| {
            b.iter(|| BashEvent::from_json(std::hint::black_box(&bytes)).expect("parse"))
        });
    }
    g.finish();
}

/// Drains an `execute` answer; returns its length.
async fn drain(svc: &BashService, command: &str) -> usize {
    let req = ExecuteBashRequest {
        command: command.into(),
        cwd: None,
        timeout: 60,
    };
    let mut s = svc.execute(req).await.expect("execute");
    let mut n = 0;
    while let Some(b) = s.next().await {
        n += b.expect("body").len();
    }
    n
}

fn execute(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let svc = BashService::new(dir.path().join("events")).expect("service");
    let mut g = c.benchmark_group("bash_execute");
    g.sample_size(30);
    g.bench_function("true", |b| b.iter(|| rt.block_on(drain(&svc, "true"))));
    // Output chunking: 10 MB through the runner, persisted as 1 MiB chunks.
    let n = 10_000_000u64;
    g.throughput(Throughput::Bytes(n));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    let cmd = format!("head -c {n} /dev/zero | tr '\\0' a");
    g.bench_function("output_10MB", |b| {
        b.iter(|| {
            let got = rt.block_on(drain(&svc, &cmd));
            assert!(got as u64 > n, "output missing: {got} bytes");
        })
    });
    g.finish();
    rt.block_on(svc.shutdown());
}

/// Writes `commands` commands with `outputs` outputs each, in the store's file layout.
fn populate(dir: &Path, commands: usize, outputs: usize) -> Vec<String> {
    std::fs::create_dir_all(dir).expect("mkdir");
    let base = chrono::Utc::now() - chrono::Duration::hours(1);
    let mut ids = Vec::new();
    let mut t = 0i64;
    for _ in 0..commands {
        let cid = uuid::Uuid::new_v4().simple().to_string();
        let mut write = |kind: &str, ev: &BashEvent| {
            let ts = base + chrono::Duration::microseconds(t);
            t += 10;
            let prefix = ts.format("%Y%m%d%H%M%S%6f");
            let name = match kind {
                "BashCommand" => format!("{prefix}_BashCommand_{}", ev.id()),
                _ => format!("{prefix}_BashOutput_{cid}_{}", ev.id()),
            };
            std::fs::write(dir.join(name), serde_json::to_vec(ev).expect("json")).expect("write");
        };
        let cmd = BashEvent::Command(BashCommand {
            command: "echo hi".into(),
            cwd: None,
            timeout: 300,
            id: cid.clone(),
            timestamp: "2026-11-25T11:21:09.170846Z".into(),
            kind: "BashCommand".into(),
        });
        write("BashCommand", &cmd);
        for o in 0..outputs {
            let mut ev = output(64);
            if let BashEvent::Output(out) = &mut ev {
                out.command_id = cid.clone();
                out.order = o as i64;
                out.exit_code = (o + 1 == outputs).then_some(0);
            }
            write("BashOutput", &ev);
        }
        ids.push(cid);
    }
    ids
}

fn search(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events");
    // 2,000 commands x (1 command + 4 outputs) = 10,000 events.
    let ids = populate(&events, 2000, 4);
    let mut g = c.benchmark_group("bash_search_10k");
    g.bench_function("open_and_index", |b| {
        b.iter_batched(
            || (),
            |_| BashService::new(events.clone()).expect("service"),
            BatchSize::PerIteration,
        )
    });
    let svc = BashService::new(events.clone()).expect("service");
    let first = SearchQuery {
        limit: 100,
        ..Default::default()
    };
    g.bench_function("first_page", |b| {
        b.iter(|| rt.block_on(svc.search_page(first.clone())))
    });
    let mut k = 0usize;
    g.bench_function("outputs_of_one_command", |b| {
        b.iter(|| {
            k = (k + 1) % ids.len();
            let q = SearchQuery {
                kind: Some(BashEventKind::Output),
                command_id: Some(ids[k].clone()),
                order_gt: Some(0),
                limit: 100,
                ..Default::default()
            };
            let page = rt.block_on(svc.search_page(q));
            assert_eq!(page.items.len(), 3);
        })
    });
    g.finish();
}

criterion_group!(benches, serialization, execute, search);
criterion_main!(benches);
