//! The machine's floors, measured in the same run: fork+exec of `true`, loopback TCP
//! throughput, and the round trip of an empty axum handler through the same HTTP client the
//! scenarios use.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::report::Outcome;
use crate::stats::pct;
use crate::Params;

/// Sequential fork+exec+wait of `true`, p50 in ms; then `par` threads at once, spawns/s.
fn spawn_floor(n: usize, par: usize) -> anyhow::Result<(f64, f64)> {
    let run = || -> anyhow::Result<()> {
        let st = Command::new("true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        anyhow::ensure!(st.success(), "`true` failed: {st}");
        Ok(())
    };
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + 5 {
        let t = Instant::now();
        run()?;
        if i >= 5 {
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let t0 = Instant::now();
    let per = n.max(par) / par;
    std::thread::scope(|s| -> anyhow::Result<()> {
        let hs: Vec<_> = (0..par)
            .map(|_| {
                s.spawn(move || -> anyhow::Result<()> {
                    for _ in 0..per {
                        run()?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in hs {
            h.join()
                .map_err(|_| anyhow::anyhow!("spawn thread panicked"))??;
        }
        Ok(())
    })?;
    let rate = (per * par) as f64 / t0.elapsed().as_secs_f64();
    Ok((pct(&lat, 50.0), rate))
}

/// One connection, `bytes` pushed through loopback in 1 MiB writes; MiB/s.
async fn tcp_floor(bytes: u64) -> anyhow::Result<f64> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let reader = tokio::spawn(async move {
        let (mut s, _) = l.accept().await?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        anyhow::Ok(got)
    });
    let mut c = tokio::net::TcpStream::connect(addr).await?;
    let buf = vec![b'a'; 1 << 20];
    let t0 = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        c.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    c.shutdown().await?;
    drop(c);
    let got = reader.await??;
    let dt = t0.elapsed().as_secs_f64();
    anyhow::ensure!(got == bytes, "tcp floor: {got} of {bytes} bytes arrived");
    Ok(bytes as f64 / (1 << 20) as f64 / dt)
}

/// An empty axum handler on its own 2-thread runtime; p50 round trip in ms with `reqwest`.
async fn axum_floor(n: usize) -> anyhow::Result<f64> {
    let std_l = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_l.set_nonblocking(true)?;
    let addr = std_l.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let th = std::thread::spawn(move || -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(std_l)?;
            let app = axum::Router::new().route("/health", axum::routing::get(|| async { "" }));
            axum::serve(l, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await?;
            anyhow::Ok(())
        })
    });
    let client = crate::http::client()?;
    let url = format!("http://{addr}/health");
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + 5 {
        let t = Instant::now();
        let r = client.get(&url).send().await?;
        anyhow::ensure!(r.status() == 200, "axum floor: HTTP {}", r.status());
        r.bytes().await?;
        if i >= 5 {
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let _ = tx.send(());
    th.join()
        .map_err(|_| anyhow::anyhow!("axum thread panicked"))?
        .context("axum floor server")?;
    Ok(pct(&lat, 50.0))
}

/// Runs every floor; each failure is reported on its own metric.
pub async fn run(p: &Params) -> Outcome {
    let mut o = Outcome::default();
    let (n, par) = (p.floor_spawn_n, p.conc_clients.min(16));
    match tokio::task::spawn_blocking(move || spawn_floor(n, par)).await {
        Ok(Ok((p50, rate))) => {
            o.value("floor_spawn_ms", p50);
            o.value("floor_spawn_per_s", rate);
        }
        Ok(Err(e)) => o.fail(&["floor_spawn_ms", "floor_spawn_per_s"], e.to_string()),
        Err(e) => o.fail(&["floor_spawn_ms", "floor_spawn_per_s"], e.to_string()),
    }
    match tokio::time::timeout(Duration::from_secs(120), tcp_floor(p.floor_tcp_mib << 20)).await {
        Ok(Ok(v)) => o.value("floor_tcp_mib_s", v),
        Ok(Err(e)) => o.fail(&["floor_tcp_mib_s"], e.to_string()),
        Err(_) => o.fail(&["floor_tcp_mib_s"], "timeout".into()),
    }
    match axum_floor(p.lat_n).await {
        Ok(v) => o.value("floor_http_ms", v),
        Err(e) => o.fail(&["floor_http_ms"], e.to_string()),
    }
    o
}
