//! Criterion micro-benchmarks of the conversation event log: event JSON (stamp + serialise),
//! one durable append (temp file, fsync, rename, directory fsync), loading a log of 10,000
//! events, and a kind filter over them as `events/search` does.

use std::path::Path;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::{json, Value};

use agent_server::conversation::{events, store};

fn action(i: usize) -> Value {
    json!({
        "source": "agent",
        "thought": [{"type": "text", "text": format!("thinking about step {i}")}],
        "action": {"thought": format!("MOCK_THOUGHT step {i}"), "kind": "ThinkAction"},
        "tool_name": "think",
        "tool_call_id": format!("call_{i}"),
        "llm_response_id": format!("resp_{i}"),
        "security_risk": "UNKNOWN",
        "kind": "ActionEvent",
    })
}

fn stamped(i: usize) -> Value {
    let body = if i % 2 == 0 {
        action(i)
    } else {
        events::state_update("execution_status", json!("running"))
    };
    events::finalize(
        body,
        &uuid::Uuid::new_v4().to_string(),
        "2026-11-25T11:23:02.332519",
        None,
    )
}

fn write_log(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for i in 0..n {
        let ev = stamped(i);
        let name = store::event_file_name(i, events::id(&ev));
        std::fs::write(dir.join(name), serde_json::to_vec(&ev).expect("json")).expect("write");
    }
}

fn serialization(c: &mut Criterion) {
    let mut g = c.benchmark_group("conversation_event_json");
    let ev = stamped(0);
    g.throughput(Throughput::Bytes(
        serde_json::to_vec(&ev).expect("json").len() as u64,
    ));
    g.bench_function("finalize_and_serialize", |b| {
        b.iter(|| {
            let ev = events::finalize(
                action(1),
                "8d0c1b5e-0000-4000-8000-000000000000",
                "2026-11-25T11:23:02.332519",
                Some("p"),
            );
            serde_json::to_vec(&ev).expect("json")
        })
    });
    g.finish();
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ev = stamped(0);
    let mut i = 0usize;
    let mut g = c.benchmark_group("conversation_event_append");
    g.sample_size(50);
    g.bench_function("write_json_fsync", |b| {
        b.iter(|| {
            i += 1;
            store::write_json(
                &dir.path().join(store::event_file_name(i, events::id(&ev))),
                &ev,
            )
            .expect("append")
        })
    });
    g.finish();
}

fn search(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let evdir = dir.path().join("events");
    write_log(&evdir, 10_000);
    let mut g = c.benchmark_group("conversation_events_10k");
    g.sample_size(10);
    g.bench_function("load_events", |b| {
        b.iter_batched(
            || (),
            |_| {
                let v = store::load_events(&evdir).expect("load");
                assert_eq!(v.len(), 10_000);
                v
            },
            BatchSize::PerIteration,
        )
    });
    let log = store::load_events(&evdir).expect("load");
    g.sample_size(100);
    g.bench_function("filter_kind_first_page", |b| {
        b.iter(|| {
            let page: Vec<&Value> = log
                .iter()
                .filter(|e| events::kind(e) == "ActionEvent")
                .take(100)
                .collect();
            assert_eq!(page.len(), 100);
            serde_json::to_vec(&page).expect("json")
        })
    });
    g.bench_function("filter_kind_last_page_desc", |b| {
        b.iter(|| {
            let page: Vec<&Value> = log
                .iter()
                .rev()
                .filter(|e| events::kind(e) == "ConversationStateUpdateEvent")
                .take(100)
                .collect();
            assert_eq!(page.len(), 100);
            serde_json::to_vec(&page).expect("json")
        })
    });
    g.finish();
}

criterion_group!(benches, serialization, append, search);
criterion_main!(benches);
