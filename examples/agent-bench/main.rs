//! `agent-bench`: the project's side-by-side load generator. Starts each server under test
//! (or attaches to a URL), interleaves them (A B, B A, ...), drives the same verified load at
//! each, measures the machine's floors in the same run, and writes a Markdown table and JSON.
//!
//! Run `cargo run --release --example agent-bench -- --help`; see BENCHMARKS.md.

mod conv;
mod floors;
mod http;
mod mock_llm;
mod procfs;
mod report;
mod scale;
mod server;
mod stats;
mod workspace;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde::{Deserialize, Serialize};

use report::{Outcome, ServerResults};
use server::{Dirs, Running, ServerSpec, StartOpts};

pub const MIB: u64 = 1 << 20;

/// Every scenario, in the order a session runs them (memory-heavy ones last).
const SCENARIOS: &[&str] = &[
    "floors",
    "cold_start",
    "health",
    "exec",
    "concurrency",
    "bash_ws",
    "fanout",
    "agent",
    "transfer",
    "large_output",
    "scale",
];

/// Sizes and counts of one mode; any field can be overridden with `--set key=value`.
#[derive(Clone, Serialize, Deserialize)]
pub struct Params {
    pub rounds: usize,
    pub cold_starts: usize,
    pub lat_n: usize,
    pub conc_clients: usize,
    pub conc_per_client: usize,
    pub bash_ws_n: usize,
    pub bash_ws_window: usize,
    pub bigout_bytes: u64,
    pub poll_ms: u64,
    pub file_mib: u64,
    pub xfer_reps: usize,
    pub fanout_small: usize,
    pub fanout_big: usize,
    pub fanout_big_convs: usize,
    pub fanout_msgs: usize,
    pub steps_one: usize,
    pub par_convs: usize,
    pub par_steps: usize,
    pub scale_convs: usize,
    pub scale_events: usize,
    pub scale_search_n: usize,
    pub floor_spawn_n: usize,
    pub floor_tcp_mib: u64,
    pub phase_timeout_s: f64,
    pub ready_timeout_s: f64,
}

impl Params {
    fn quick() -> Params {
        Params {
            rounds: 1,
            cold_starts: 2,
            lat_n: 50,
            conc_clients: 64,
            conc_per_client: 3,
            bash_ws_n: 200,
            bash_ws_window: 16,
            bigout_bytes: 20_000_000,
            poll_ms: 100,
            file_mib: 64,
            xfer_reps: 1,
            fanout_small: 40,
            fanout_big: 200,
            fanout_big_convs: 5,
            fanout_msgs: 10,
            steps_one: 20,
            par_convs: 20,
            par_steps: 5,
            scale_convs: 200,
            scale_events: 100,
            scale_search_n: 20,
            floor_spawn_n: 200,
            floor_tcp_mib: 1024,
            phase_timeout_s: 120.0,
            ready_timeout_s: 120.0,
        }
    }

    fn full() -> Params {
        Params {
            rounds: 3,
            cold_starts: 5,
            lat_n: 200,
            conc_clients: 64,
            conc_per_client: 10,
            bash_ws_n: 1000,
            bigout_bytes: 100_000_000,
            file_mib: 1024,
            xfer_reps: 2,
            fanout_msgs: 50,
            steps_one: 50,
            par_steps: 20,
            scale_convs: 1000,
            scale_search_n: 100,
            floor_spawn_n: 1000,
            floor_tcp_mib: 4096,
            phase_timeout_s: 600.0,
            ..Params::quick()
        }
    }

    fn set(&mut self, kv: &str) -> anyhow::Result<()> {
        let (k, v) = kv.split_once('=').context("--set wants KEY=VALUE")?;
        let mut j = serde_json::to_value(&*self)?;
        let slot = j
            .get_mut(k)
            .with_context(|| format!("unknown parameter {k:?}"))?;
        *slot = serde_json::from_str(v).with_context(|| format!("bad value for {k}: {v:?}"))?;
        *self = serde_json::from_value(j)?;
        Ok(())
    }
}

#[derive(Parser)]
#[command(about = "Benchmark agent-server implementations side by side (see BENCHMARKS.md)")]
struct Args {
    /// NAME=CMD (placeholders {port} {conversations_dir} {workdir} {workspace_dir}
    /// {bash_events_dir} {home} {tmpdir}) or NAME=http://host:port; repeat, the first is A.
    #[arg(long = "server", required = true)]
    servers: Vec<String>,
    /// Small sizes and few repetitions (< 2 min per server).
    #[arg(long)]
    quick: bool,
    /// Comma list of scenarios (default: all).
    #[arg(long, value_delimiter = ',')]
    scenarios: Option<Vec<String>>,
    /// Override a mode parameter, e.g. --set lat_n=500.
    #[arg(long = "set")]
    sets: Vec<String>,
    /// Extra environment for every started server, K=V.
    #[arg(long = "env")]
    envs: Vec<String>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the Markdown report here (also printed).
    #[arg(long)]
    md: Option<PathBuf>,
    /// Where servers' private directories go.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    tmp_root: PathBuf,
    /// Keep the servers' directories (logs).
    #[arg(long)]
    keep_tmp: bool,
    /// A persisted conversation to clone for the scale scenario.
    #[arg(
        long,
        default_value = "tests/fixtures/reference_conversations/d9a4accae10742dfb7b3aced612a72d3"
    )]
    sample: PathBuf,
}

/// Test data shared by every server and round.
pub struct Data {
    pub dir: PathBuf,
    pub big_path: PathBuf,
    pub big_size: u64,
    pub big_sha: String,
    pub bigout_cmd: String,
    pub bigout_len: u64,
    pub bigout_sha: String,
    pub bigout_local_s: f64,
}

impl Data {
    fn prepare(
        p: &Params,
        tmp_root: &Path,
        need_big: bool,
        need_out: bool,
    ) -> anyhow::Result<Data> {
        use rand::{RngCore, SeedableRng};
        use sha2::Digest;
        use std::io::Write;
        let dir = tempfile::Builder::new()
            .prefix("agent-bench-data-")
            .tempdir_in(tmp_root)?
            .keep();
        let big_path = dir.join("big.bin");
        let mut h = sha2::Sha256::new();
        let big_size = if need_big { p.file_mib * MIB } else { 0 };
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big_path)?);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1234);
        let mut buf = vec![0u8; 4 << 20];
        let mut left = big_size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            rng.fill_bytes(&mut buf[..n]);
            h.update(&buf[..n]);
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
        f.flush()?;
        let bigout_cmd = format!(
            "head -c {} /dev/zero | tr '\\0' 'a' | fold -w 100",
            p.bigout_bytes
        );
        let (bigout_len, bigout_sha, bigout_local_s) = if need_out {
            workspace::bigout_expected(&bigout_cmd)?
        } else {
            (0, String::new(), 0.0)
        };
        Ok(Data {
            dir,
            big_path,
            big_size,
            big_sha: h.finalize().iter().map(|x| format!("{x:02x}")).collect(),
            bigout_cmd,
            bigout_len,
            bigout_sha,
            bigout_local_s,
        })
    }
}

/// What a scenario gets.
pub struct Ctx<'a> {
    pub base: String,
    pub p: &'a Params,
    pub data: &'a Data,
    pub dirs: Option<&'a Dirs>,
    pub sampler: Option<&'a procfs::RssSampler>,
    pub client: reqwest::Client,
}

impl Ctx<'_> {
    /// A directory the server may use as a working directory.
    pub fn work_dir(&self) -> PathBuf {
        self.dirs
            .map(|d| d.workspace.clone())
            .unwrap_or_else(|| self.data.dir.join("work"))
    }
}

fn log(msg: &str) {
    eprintln!("[{}] {msg}", chrono::Local::now().format("%H:%M:%S"));
}

fn keys(prefix: &[&str]) -> Vec<&'static str> {
    report::METRICS
        .iter()
        .map(|m| m.key)
        .filter(|k| prefix.iter().any(|p| k.starts_with(p)))
        .collect()
}

struct Run {
    args: Args,
    p: Params,
    scen: Vec<String>,
    opts: StartOpts,
    results: BTreeMap<String, ServerResults>,
    floors: ServerResults,
}

impl Run {
    fn wants(&self, s: &str) -> bool {
        self.scen.iter().any(|x| x == s)
    }

    fn start(&self, spec: &ServerSpec, opts: &StartOpts) -> anyhow::Result<(Running, f64)> {
        let mut r = Running::start(spec, opts)?;
        let dt = r.wait_ready(Duration::from_secs_f64(self.p.ready_timeout_s))?;
        Ok((r, dt))
    }

    /// One fresh server: idle RSS, every load scenario, RSS after, stop.
    async fn session(&mut self, spec: &ServerSpec, data: &Data, mock: Option<&mock_llm::MockLlm>) {
        let mut out: Vec<(&str, Outcome)> = Vec::new();
        let load_keys = keys(&[
            "health",
            "exec",
            "conc",
            "bash_ws",
            "fan_",
            "step",
            "par_",
            "events_",
            "upload",
            "download",
            "xfer",
            "bigout",
            "rss_",
            "server_cpu",
        ]);
        let (mut srv, _) = match self.start(spec, &self.opts) {
            Ok(x) => x,
            Err(e) => {
                let mut o = Outcome::default();
                o.fail(&load_keys, format!("server did not start: {e:#}"));
                self.results
                    .entry(spec.name.clone())
                    .or_default()
                    .add("session", o);
                return;
            }
        };
        let pid = srv.pid();
        let sys = procfs::Sys::get();
        let sampler = pid.map(procfs::RssSampler::start);
        let mut mem = Outcome::default();
        if let Some(pid) = pid {
            tokio::time::sleep(Duration::from_secs(2)).await;
            mem.value(
                "rss_idle_mib",
                procfs::spot_rss(&sys, pid) as f64 / MIB as f64,
            );
        }
        let cpu0 = pid.map(|p| procfs::tree_cpu(&sys, p));
        let t_load0 = Instant::now();
        let client = match http::client() {
            Ok(c) => c,
            Err(e) => {
                log(&format!("cannot build an HTTP client: {e}"));
                return;
            }
        };
        let dirs = srv.dirs.clone();
        let ctx = Ctx {
            base: srv.base.clone(),
            p: &self.p,
            data,
            dirs: dirs.as_ref(),
            sampler: sampler.as_ref(),
            client,
        };
        for sc in SCENARIOS {
            if !self.wants(sc) || matches!(*sc, "floors" | "cold_start" | "scale") {
                continue;
            }
            if matches!(*sc, "exec" | "concurrency" | "bash_ws" | "large_output") {
                let r = workspace::clear_bash_events(&ctx).await;
                if !r.starts_with('2') {
                    log(&format!("  {}: DELETE bash_events -> {r}", spec.name));
                }
            }
            log(&format!("  {}: {sc} ...", spec.name));
            let t = Instant::now();
            let o = match *sc {
                "health" => Outcome::from_result(&keys(&["health"]), workspace::health(&ctx).await),
                "exec" => {
                    let mut a = Outcome::from_result(
                        &keys(&["exec_true"]),
                        workspace::exec_true(&ctx).await,
                    );
                    let b = Outcome::from_result(
                        &keys(&["exec_echo"]),
                        workspace::exec_echo(&ctx).await,
                    );
                    a.values.extend(b.values);
                    a.errors.extend(b.errors);
                    a
                }
                "concurrency" => {
                    Outcome::from_result(&keys(&["conc_"]), workspace::concurrency(&ctx).await)
                }
                "bash_ws" => {
                    Outcome::from_result(&keys(&["bash_ws"]), workspace::bash_ws(&ctx).await)
                }
                "fanout" => {
                    let mut a = Outcome::from_result(
                        &keys(&["fan_small"]),
                        conv::fanout(&ctx, self.p.fanout_small, 1, "fan_small").await,
                    );
                    let b = Outcome::from_result(
                        &keys(&["fan_big"]),
                        conv::fanout(&ctx, self.p.fanout_big, self.p.fanout_big_convs, "fan_big")
                            .await,
                    );
                    a.values.extend(b.values);
                    a.errors.extend(b.errors);
                    a.detail.extend(b.detail);
                    a
                }
                "agent" => {
                    let k = keys(&["step_", "par_", "events_persisted"]);
                    match mock {
                        Some(m) => Outcome::from_result(&k, conv::agent_steps(&ctx, &m.base).await),
                        None => {
                            let mut o = Outcome::default();
                            o.fail(&k, "mock LLM not available".into());
                            o
                        }
                    }
                }
                "transfer" => Outcome::from_result(
                    &keys(&["upload", "download", "xfer"]),
                    workspace::transfer(&ctx).await,
                ),
                "large_output" => {
                    Outcome::from_result(&keys(&["bigout"]), workspace::large_output(&ctx).await)
                }
                _ => continue,
            };
            for (k, e) in &o.errors {
                log(&format!(
                    "  {}: {sc} FAIL [{k}]: {}",
                    spec.name,
                    e.chars().take(300).collect::<String>()
                ));
            }
            log(&format!(
                "  {}: {sc} done in {:.1}s",
                spec.name,
                t.elapsed().as_secs_f64()
            ));
            out.push((sc, o));
            if !srv.alive() {
                log(&format!(
                    "  {}: server died; log:\n{}",
                    spec.name,
                    srv.log_tail()
                ));
                break;
            }
        }
        let t_load1 = Instant::now();
        if let (Some(pid), Some(c0)) = (pid, cpu0) {
            if srv.alive() {
                mem.value("server_cpu_s", procfs::tree_cpu(&sys, pid) - c0);
                tokio::time::sleep(Duration::from_secs(1)).await;
                mem.value(
                    "rss_after_load_mib",
                    procfs::spot_rss(&sys, pid) as f64 / MIB as f64,
                );
                if let Some(pk) = sampler.as_ref().and_then(|s| s.peak(t_load0, t_load1)) {
                    mem.value("rss_peak_mib", pk as f64 / MIB as f64);
                }
            } else {
                mem.fail(
                    &["server_cpu_s", "rss_after_load_mib", "rss_peak_mib"],
                    "server died".into(),
                );
            }
        }
        drop(sampler);
        srv.stop();
        let res = self.results.entry(spec.name.clone()).or_default();
        res.add("memory", mem);
        for (sc, o) in out {
            res.add(sc, o);
        }
    }

    /// Scale: a fresh copy of `scale_convs` generated conversations per start.
    async fn scale(&mut self, spec: &ServerSpec, sample: &scale::Sample) {
        let k = keys(&["scale_"]);
        let r: anyhow::Result<Outcome> = async {
            let root = tempfile::Builder::new()
                .prefix("agent-bench-scale-")
                .tempdir_in(&self.opts.tmp_root)?;
            let convs = root.path().join("conversations");
            let work = root.path().join("work");
            std::fs::create_dir_all(&work)?;
            let t = Instant::now();
            sample.generate(&convs, &work, self.p.scale_convs, self.p.scale_events)?;
            log(&format!(
                "  generated {} conversations x {} events in {:.1}s",
                self.p.scale_convs,
                self.p.scale_events,
                t.elapsed().as_secs_f64()
            ));
            let opts = StartOpts {
                conversations: Some(convs),
                ..self.opts.clone()
            };
            let (mut srv, dt) = self.start(spec, &opts)?;
            let mut o = Outcome::default();
            o.value("scale_start_ms", dt * 1e3);
            let sys = procfs::Sys::get();
            tokio::time::sleep(Duration::from_secs(2)).await;
            if let Some(pid) = srv.pid() {
                o.value(
                    "scale_rss_mib",
                    procfs::spot_rss(&sys, pid) as f64 / MIB as f64,
                );
            }
            let s = scale::search(&srv.base, self.p.scale_convs, self.p.scale_search_n).await;
            let s = Outcome::from_result(&keys(&["scale_search"]), s);
            o.values.extend(s.values);
            o.errors.extend(s.errors);
            if let Some(pid) = srv.pid() {
                o.value(
                    "scale_rss_after_mib",
                    procfs::spot_rss(&sys, pid) as f64 / MIB as f64,
                );
            }
            srv.stop();
            Ok(o)
        }
        .await;
        let o = Outcome::from_result(&k, r);
        for (key, e) in &o.errors {
            log(&format!(
                "  {}: scale FAIL [{key}]: {}",
                spec.name,
                e.chars().take(300).collect::<String>()
            ));
        }
        self.results
            .entry(spec.name.clone())
            .or_default()
            .add("scale", o);
    }
}

fn order(specs: &[ServerSpec], i: usize) -> Vec<ServerSpec> {
    let mut v = specs.to_vec();
    if i % 2 == 1 {
        v.reverse();
    }
    v
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{} CPUs ({cpu}), {:.0} GiB RAM, Linux {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        mem as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

async fn run_all(args: Args) -> anyhow::Result<bool> {
    let specs = args
        .servers
        .iter()
        .map(|s| ServerSpec::parse(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mode = if args.quick { "quick" } else { "full" };
    let mut p = if args.quick {
        Params::quick()
    } else {
        Params::full()
    };
    for kv in &args.sets {
        p.set(kv)?;
    }
    let scen: Vec<String> = match &args.scenarios {
        Some(v) => {
            for s in v {
                anyhow::ensure!(
                    SCENARIOS.contains(&s.as_str()),
                    "unknown scenario {s:?}; known: {SCENARIOS:?}"
                );
            }
            v.clone()
        }
        None => SCENARIOS.iter().map(|s| s.to_string()).collect(),
    };
    let env = args
        .envs
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .context("--env wants K=V")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut env = env;
    if !env.iter().any(|(k, _)| k == "OH_MAX_CONCURRENT_RUNS") {
        // Both servers cap parallel runs at 10 by default; the agent scenario runs more.
        env.push((
            "OH_MAX_CONCURRENT_RUNS".into(),
            (p.par_convs + 4).max(10).to_string(),
        ));
    }
    let opts = StartOpts {
        tmp_root: args.tmp_root.clone(),
        env,
        keep_tmp: args.keep_tmp,
        conversations: None,
    };
    let t_begin = Instant::now();
    let started = chrono::Utc::now();
    log(&format!(
        "mode={mode} servers={:?} scenarios={scen:?}",
        specs.iter().map(|s| &s.name).collect::<Vec<_>>()
    ));
    let wants = |s: &str| scen.iter().any(|x| x == s);
    let data = Data::prepare(&p, &args.tmp_root, wants("transfer"), wants("large_output"))?;
    let mut run = Run {
        p: p.clone(),
        scen: scen.clone(),
        opts,
        results: BTreeMap::new(),
        floors: ServerResults::default(),
        args,
    };
    for s in &specs {
        run.results.insert(s.name.clone(), ServerResults::default());
    }
    let mock = if run.wants("agent") {
        match mock_llm::MockLlm::start().await {
            Ok(m) => Some(m),
            Err(e) => {
                log(&format!("mock LLM: {e:#}"));
                None
            }
        }
    } else {
        None
    };
    if wants("large_output") {
        let mut o = Outcome::default();
        o.value("floor_bigout_s", data.bigout_local_s);
        o.value(
            "floor_bigout_mib_s",
            data.bigout_len as f64 / MIB as f64 / data.bigout_local_s,
        );
        run.floors.add("floors", o);
    }
    // 1. cold starts: one untimed warm-up each, then interleaved timed starts
    if run.wants("cold_start") {
        let local: Vec<_> = specs.iter().filter(|s| s.is_local()).cloned().collect();
        for s in &local {
            log(&format!("warm-up start {}", s.name));
            let _ = run.start(s, &run.opts);
        }
        for i in 0..p.cold_starts {
            for s in order(&local, i) {
                let mut o = Outcome::default();
                match run.start(&s, &run.opts) {
                    Ok((mut srv, dt)) => {
                        srv.stop();
                        log(&format!(
                            "cold start {} #{}: {:.0} ms",
                            s.name,
                            i + 1,
                            dt * 1e3
                        ));
                        o.value("cold_start_ms", dt * 1e3);
                    }
                    Err(e) => {
                        log(&format!("cold start {} #{}: FAIL {e:#}", s.name, i + 1));
                        o.fail(&["cold_start_ms"], format!("{e:#}"));
                    }
                }
                run.results
                    .entry(s.name.clone())
                    .or_default()
                    .add("cold_start", o);
            }
        }
    }
    // 2. load rounds, interleaved; floors once per round
    for r in 0..p.rounds {
        if run.wants("floors") {
            log(&format!("round {}/{}: floors", r + 1, p.rounds));
            let mut o = floors::run(&p).await;
            if let Some(m) = &mock {
                match conv::llm_floor(&m.base, 20).await {
                    Ok(v) => o.value("floor_llm_ms", v),
                    Err(e) => o.fail(&["floor_llm_ms"], format!("{e:#}")),
                }
            }
            let spawn = o
                .values
                .iter()
                .find(|(k, _)| k == "floor_spawn_ms")
                .map(|x| x.1);
            let http = o
                .values
                .iter()
                .find(|(k, _)| k == "floor_http_ms")
                .map(|x| x.1);
            if let (Some(a), Some(b)) = (spawn, http) {
                o.value("floor_exec_ms", a + b);
            }
            run.floors.add("floors", o);
        }
        let any_load = run
            .scen
            .iter()
            .any(|s| !matches!(s.as_str(), "floors" | "cold_start" | "scale"));
        for s in order(&specs, r).into_iter().filter(|_| any_load) {
            log(&format!("round {}/{}: {}", r + 1, p.rounds, s.name));
            run.session(&s, &data, mock.as_ref()).await;
        }
    }
    // 3. scale: many conversations on disk, one start per server and round
    if run.wants("scale") {
        match scale::Sample::load(&run.args.sample) {
            Ok(sample) => {
                for r in 0..p.rounds.min(2) {
                    for s in order(&specs, r).into_iter().filter(|s| s.is_local()) {
                        log(&format!("scale {}/{}: {}", r + 1, p.rounds.min(2), s.name));
                        run.scale(&s, &sample).await;
                    }
                }
            }
            Err(e) => log(&format!("scale skipped: cannot load the sample: {e:#}")),
        }
    }
    drop(mock);
    let _ = std::fs::remove_dir_all(&data.dir);

    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let table = report::table(&names, &run.results, &run.floors);
    let mut md = format!(
        "## agent-server benchmark ({mode} mode, medians over {} round(s))\n\n\
         Machine: {}. Date: {} UTC. Wall time of the run: {:.0} s.\n\n",
        p.rounds,
        machine(),
        started.format("%Y-%m-%d %H:%M"),
        t_begin.elapsed().as_secs_f64()
    );
    md.push_str("Servers:\n\n");
    for s in &specs {
        let what = match &s.target {
            server::Target::Command(c) => format!("`{c}`"),
            server::Target::Url(u) => u.clone(),
        };
        md.push_str(&format!("- `{}`: {what}\n", s.name));
    }
    md.push('\n');
    md.push_str(&table);
    md.push('\n');
    println!("{md}");
    if let Some(path) = &run.args.md {
        std::fs::write(path, &md)?;
    }
    if let Some(path) = &run.args.json {
        let doc = serde_json::json!({
            "meta": {"mode": mode, "params": p, "started": started.to_rfc3339(),
                     "elapsed_s": t_begin.elapsed().as_secs_f64(), "machine": machine(),
                     "scenarios": scen},
            "servers": specs.iter().map(|s| (s.name.clone(), format!("{:?}", s.target))).collect::<BTreeMap<_, _>>(),
            "metrics": report::METRICS.iter().map(|m| serde_json::json!({
                "key": m.key, "label": m.label, "unit": m.unit, "better": m.better, "floor": m.floor})).collect::<Vec<_>>(),
            "medians": names.iter().map(|n| (n.clone(), report::METRICS.iter()
                .map(|m| (m.key, run.results.get(n).and_then(|r| r.median(m.key))))
                .collect::<BTreeMap<_, _>>())).collect::<BTreeMap<_, _>>(),
            "results": run.results,
            "floors": run.floors,
            "table_markdown": md,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
        log(&format!("wrote {}", path.display()));
    }
    let any_fail =
        run.results.values().any(|r| !r.errors.is_empty()) || !run.floors.errors.is_empty();
    Ok(!any_fail)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(run_all(args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
