//! `/api/file/*` against the real binary: uploads (streamed, atomic, unlimited), downloads
//! (streamed, ranged), directory routes, archives, and their error answers.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::{ServerOptions, TestServer};

/// Deterministic pseudo-random bytes (xorshift), produced chunk by chunk.
struct Noise(u64);

impl Noise {
    fn chunk(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            out.extend_from_slice(&self.0.to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

async fn upload(server: &TestServer, path: &str, data: Vec<u8>) -> reqwest::Response {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(data).file_name("x.bin"),
    );
    server
        .client()
        .post(format!("{}/api/file/upload", server.url))
        .query(&[("path", path)])
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn detail(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body["detail"].clone())
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect()
}

#[tokio::test]
async fn upload_and_download_100_mib_in_bounded_memory() {
    const SIZE: usize = 100 * 1024 * 1024;
    const CHUNK: usize = 1024 * 1024;
    let server = TestServer::start();
    let work = server.workdir();
    let target = work.join("big").join("blob.bin");

    // Stream the upload so neither side needs the whole file in memory.
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let producer = tokio::spawn(async move {
        let mut hasher = Sha256::new();
        for _ in 0..SIZE / CHUNK {
            let c = noise.chunk(CHUNK);
            hasher.update(&c);
            if tx.send(Ok(c)).await.is_err() {
                break;
            }
        }
        hasher.finalize()
    });
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let part =
        reqwest::multipart::Part::stream_with_length(body, SIZE as u64).file_name("blob.bin");
    let resp = server
        .client()
        .post(format!("{}/api/file/upload", server.url))
        .query(&[("path", target.to_str().unwrap())])
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"success": true, "file_size": SIZE})
    );
    let expected = producer.await.unwrap();
    assert_eq!(std::fs::metadata(&target).unwrap().len(), SIZE as u64);
    assert!(leftovers(target.parent().unwrap()).is_empty());

    let resp = server
        .client()
        .get(format!("{}/api/file/download", server.url))
        .query(&[("path", target.to_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-length"].to_str().unwrap(),
        SIZE.to_string()
    );
    let mut got = Sha256::new();
    let mut stream = resp.bytes_stream();
    let mut received = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        received += chunk.len();
        got.update(&chunk);
    }
    assert_eq!(received, SIZE);
    assert_eq!(
        got.finalize(),
        expected,
        "downloaded bytes differ from the upload"
    );

    let peak = server.peak_rss_kib();
    assert!(
        peak < 100 * 1024,
        "server peak RSS {peak} KiB while moving 100 MiB"
    );
}

/// A stream over an mpsc receiver (no extra dependency).
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

#[tokio::test]
async fn aborted_upload_keeps_the_old_file_and_leaves_nothing_behind() {
    let server = TestServer::start();
    let work = server.workdir();
    let target = work.join("keep.txt");
    std::fs::write(&target, b"old content").unwrap();

    let boundary = "XbOuNdArY";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"keep.txt\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    let declared = head.len() + 10 * 1024 * 1024;
    let query = format!("path={}", target.to_str().unwrap().replace(' ', "%20"));
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        stream,
        "POST /api/file/upload?{query} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {declared}\r\n\r\n{head}"
    )
    .unwrap();
    let partial = vec![b'n'; 2 * 1024 * 1024];
    stream.write_all(&partial).unwrap();
    stream.flush().unwrap();
    // Wait until the server has started writing the temporary file, then drop the connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    while leftovers(&work).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !leftovers(&work).is_empty(),
        "upload never reached the disk"
    );
    drop(stream);

    let deadline = Instant::now() + Duration::from_secs(10);
    while !leftovers(&work).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        leftovers(&work),
        Vec::<String>::new(),
        "temporary file left behind"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"old content");

    // The server still works and a complete upload replaces the file.
    let resp = upload(&server, target.to_str().unwrap(), b"new".to_vec()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(std::fs::read(&target).unwrap(), b"new");
}

#[tokio::test]
async fn upload_errors_match_the_reference() {
    let server = TestServer::start();
    let work = server.workdir();
    std::fs::write(work.join("plain.txt"), b"x").unwrap();
    std::fs::create_dir(work.join("dir")).unwrap();

    let (s, d) = detail(upload(&server, "relative.txt", b"x".to_vec()).await).await;
    assert_eq!((s, d), (400, "Path must be absolute".into()));
    let (s, d) =
        detail(upload(&server, work.join("dir").to_str().unwrap(), b"x".to_vec()).await).await;
    assert_eq!((s, d), (400, "Path is a directory".into()));
    let under_file = work.join("plain.txt").join("a").join("b.txt");
    let (s, d) = detail(upload(&server, under_file.to_str().unwrap(), b"x".to_vec()).await).await;
    assert_eq!(
        (s, d),
        (400, "A parent of the path is not a directory".into())
    );

    // Missing `file` part, missing `path`.
    let form = reqwest::multipart::Form::new().part(
        "other",
        reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("x"),
    );
    let resp = server
        .client()
        .post(format!("{}/api/file/upload", server.url))
        .query(&[("path", work.join("y").to_str().unwrap())])
        .multipart(form)
        .send()
        .await
        .unwrap();
    let (s, d) = detail(resp).await;
    assert_eq!(s, 422);
    assert_eq!(d[0]["loc"], serde_json::json!(["body", "file"]));
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("x"),
    );
    let resp = server
        .client()
        .post(format!("{}/api/file/upload", server.url))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let (s, d) = detail(resp).await;
    assert_eq!(s, 422);
    assert_eq!(d[0]["loc"], serde_json::json!(["query", "path"]));
    assert!(!work.join("y").exists());

    // Uploading over an existing file replaces it and keeps its mode.
    let target = work.join("plain.txt");
    std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let resp = upload(&server, target.to_str().unwrap(), b"replaced".to_vec()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(std::fs::read(&target).unwrap(), b"replaced");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&target).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // A name near NAME_MAX still uploads (the temporary name stays short enough).
    let long = work.join("n".repeat(250));
    let resp = upload(&server, long.to_str().unwrap(), b"long".to_vec()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(std::fs::read(&long).unwrap(), b"long");
    assert!(leftovers(&work).is_empty());
}

#[tokio::test]
async fn download_headers_ranges_and_errors() {
    let server = TestServer::start();
    let work = server.workdir();
    let file = work.join("up.txt");
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let url = format!("{}/api/file/download", server.url);
    let client = server.client();
    let path = file.to_str().unwrap();

    let resp = client
        .get(&url)
        .query(&[("path", path)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "application/octet-stream");
    assert_eq!(h["content-disposition"], "attachment; filename=\"up.txt\"");
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["content-length"], "1000");
    assert!(h["etag"].to_str().unwrap().starts_with('"'));
    assert!(h["last-modified"].to_str().unwrap().ends_with(" GMT"));
    assert_eq!(resp.bytes().await.unwrap().as_ref(), data.as_slice());

    let resp = client
        .get(&url)
        .query(&[("path", path)])
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.headers()["content-range"], "bytes 10-19/1000");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[10..20]);

    let resp = client
        .get(&url)
        .query(&[("path", path)])
        .header("range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[995..]);

    let resp = client
        .get(&url)
        .query(&[("path", path)])
        .header("range", "bytes=0-1,5-6")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("multipart/byteranges; boundary="));
    let len: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap().len(), len);

    let resp = client
        .get(&url)
        .query(&[("path", path)])
        .header("range", "bytes=5000-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 416);
    assert_eq!(resp.headers()["content-range"], "bytes */1000");

    let missing = work.join("missing.txt");
    for (path, status, text) in [
        ("rel.txt", 400, "Path must be absolute"),
        (missing.to_str().unwrap(), 404, "File not found"),
        (work.to_str().unwrap(), 400, "Path is not a file"),
    ] {
        let resp = client
            .get(&url)
            .query(&[("path", path)])
            .send()
            .await
            .unwrap();
        assert_eq!(detail(resp).await, (status, Value::from(text)), "{path}");
    }
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 422);

    // Names needing quoting use the RFC 5987 form.
    let odd = work.join("a b.txt");
    std::fs::write(&odd, b"x").unwrap();
    let resp = client
        .get(&url)
        .query(&[("path", odd.to_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename*=utf-8''a%20b.txt"
    );
}

#[tokio::test]
async fn directories_home_and_subdirectory_pages() {
    let server = TestServer::start();
    let work = server.workdir();
    let client = server.client();
    std::fs::write(work.join("file.txt"), b"x").unwrap();

    let create = |p: String| {
        let client = client.clone();
        let url = format!("{}/api/file/create_directory", server.url);
        async move { client.post(url).query(&[("path", p)]).send().await.unwrap() }
    };
    let resp = create(work.join("a/b/c").display().to_string()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        serde_json::json!({"success": true})
    );
    assert!(work.join("a/b/c").is_dir());
    assert_eq!(
        create(work.join("a/b/c").display().to_string())
            .await
            .status(),
        200
    );
    assert_eq!(
        detail(create(work.join("file.txt").display().to_string()).await).await,
        (400, Value::from("Path exists and is not a directory"))
    );
    assert_eq!(
        detail(create("rel/dir".into()).await).await,
        (400, Value::from("Path must be absolute"))
    );

    for name in ["Bdir", "adir", "cdir", ".hidden"] {
        std::fs::create_dir(work.join(name)).unwrap();
    }
    let url = format!("{}/api/file/search_subdirs", server.url);
    let page: Value = client
        .get(&url)
        .query(&[("path", work.to_str().unwrap()), ("limit", "2")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "adir"]);
    assert_eq!(page["next_page_id"], "Bdir");
    assert_eq!(
        page["items"][0]["path"],
        work.join("a").display().to_string()
    );
    let page: Value = client
        .get(&url)
        .query(&[
            ("path", work.to_str().unwrap()),
            ("page_id", "Bdir"),
            ("include_hidden", "true"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_page_id"], Value::Null);
    let resp = client
        .get(&url)
        .query(&[("path", work.to_str().unwrap()), ("limit", "0")])
        .send()
        .await
        .unwrap();
    let (s, d) = detail(resp).await;
    assert_eq!(s, 422);
    assert_eq!(d[0]["type"], "greater_than");
    for (path, status, text) in [
        (
            work.join("nope").display().to_string(),
            404,
            "Directory not found",
        ),
        (
            work.join("file.txt").display().to_string(),
            400,
            "Path is not a directory",
        ),
        ("rel".to_string(), 400, "Path must be absolute"),
    ] {
        let resp = client
            .get(&url)
            .query(&[("path", &path)])
            .send()
            .await
            .unwrap();
        assert_eq!(detail(resp).await, (status, Value::from(text)));
    }

    let home = server.root_path().join("home");
    std::fs::create_dir_all(home.join("projects")).unwrap();
    std::fs::create_dir_all(home.join(".config")).unwrap();
    let resp: Value = client
        .get(format!("{}/api/file/home", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["home"], home.display().to_string());
    assert_eq!(
        resp["favorites"],
        serde_json::json!([{"label": "projects", "path": home.join("projects").display().to_string()}])
    );
    assert_eq!(
        resp["locations"],
        serde_json::json!([{"label": "/", "path": "/"}])
    );
}

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.email=t@example.invalid",
            "-c",
            "user.name=t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn archives_as_tarball_and_git_patch() {
    let server = TestServer::start();
    let work = server.workdir();
    let repo = work.join("repo");
    std::fs::create_dir_all(repo.join("node_modules")).unwrap();
    std::fs::write(repo.join("a.txt"), b"a\n").unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "a.txt"]);
    git(&repo, &["commit", "-qm", "base"]);
    std::fs::write(repo.join("a.txt"), b"changed\n").unwrap();
    std::fs::write(repo.join("new.txt"), b"new\n").unwrap();
    std::fs::write(repo.join("node_modules/dep.js"), b"x").unwrap();
    let url = format!("{}/api/file/archive", server.url);
    let client = server.client();

    // The work dir holds exactly one repository: it is archived.
    let resp = client
        .get(&url)
        .query(&[("path", work.to_str().unwrap()), ("format", "tar.gz")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/gzip");
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"repo.tar.gz\""
    );
    assert_eq!(resp.headers()["x-archive-branch"], "main");
    let bytes = resp.bytes().await.unwrap();
    let mut names = Vec::new();
    let mut manifest = String::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_ref()));
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        if name.ends_with("archive_manifest.json") {
            entry.read_to_string(&mut manifest).unwrap();
        }
        names.push(name);
    }
    assert!(names.contains(&"repo/a.txt".to_string()), "{names:?}");
    assert!(names.contains(&"repo/new.txt".to_string()));
    assert!(
        !names
            .iter()
            .any(|n| n.contains("node_modules") || n.contains(".git")),
        "{names:?}"
    );
    let manifest: Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(manifest["file_count"], 2);
    assert_eq!(manifest["source"], "repo");

    let resp = client
        .get(&url)
        .query(&[("path", repo.to_str().unwrap()), ("base_ref", "HEAD")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-archive-base-ref"], "HEAD");
    let patch = resp.text().await.unwrap();
    assert!(patch.contains("+changed"), "{patch}");
    assert!(patch.contains("new.txt"));
    assert!(!patch.contains("dep.js"));

    let resp = client
        .get(&url)
        .query(&[("path", repo.to_str().unwrap()), ("base_ref", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        detail(resp).await,
        (400, Value::from("base_ref 'nope' could not be resolved"))
    );
    let resp = client
        .get(&url)
        .query(&[("path", repo.to_str().unwrap()), ("format", "zip")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let resp = client
        .get(&url)
        .query(&[("path", repo.join("nope").to_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(
        detail(resp).await,
        (404, Value::from("Directory not found"))
    );
    // Nothing is left next to the workspace.
    let stray: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "repo")
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

/// The (name, content) entries of a zip, read from its local headers.
fn unzip(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while data.len() >= pos + 30 && data[pos..pos + 4] == [0x50, 0x4b, 0x03, 0x04] {
        let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
        let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap()) as usize;
        let method = u16_at(pos + 8);
        let compressed = u32_at(pos + 18);
        let name_len = u16_at(pos + 26);
        let extra_len = u16_at(pos + 28);
        let name = String::from_utf8(data[pos + 30..pos + 30 + name_len].to_vec()).unwrap();
        let start = pos + 30 + name_len + extra_len;
        let raw = &data[start..start + compressed];
        let content = if method == 8 {
            let mut v = Vec::new();
            flate2::read::DeflateDecoder::new(raw)
                .read_to_end(&mut v)
                .unwrap();
            v
        } else {
            raw.to_vec()
        };
        out.push((name, content));
        pos = start + compressed;
    }
    out
}

#[tokio::test]
async fn trajectory_download_redacts_secrets() {
    let server = TestServer::start();
    let client = server.client();
    let id = "6a1f2d3c-0000-4000-8000-000000000abc";
    let hex = id.replace('-', "");
    let dir = server.root_path().join("conversations").join(&hex);
    std::fs::create_dir_all(dir.join("events")).unwrap();
    std::fs::create_dir_all(dir.join("acp")).unwrap();
    std::fs::write(
        dir.join("base_state.json"),
        r#"{"agent":{"llm":{"api_key":"sk-secret","model":"m"}}}"#,
    )
    .unwrap();
    std::fs::write(dir.join("events/event-0.json"), r#"{"kind":"x"}"#).unwrap();
    std::fs::write(dir.join("acp/token"), "secret").unwrap();
    std::fs::write(dir.join("meta.json.tmp"), "partial").unwrap();

    let resp = client
        .get(format!("{}/api/file/download-trajectory/{id}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-disposition"],
        format!("attachment; filename=\"{hex}.zip\"")
    );
    let entries = unzip(&resp.bytes().await.unwrap());
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            format!("{hex}/"),
            format!("{hex}/base_state.json"),
            format!("{hex}/events/"),
            format!("{hex}/events/event-0.json"),
        ]
    );
    assert_eq!(
        String::from_utf8(entries[1].1.clone()).unwrap(),
        r#"{"agent": {"llm": {"api_key": "**********", "model": "m"}}}"#
    );
    assert_eq!(entries[3].1, br#"{"kind":"x"}"#);
    // The scratch zip is gone.
    let names: Vec<_> = std::fs::read_dir(server.root_path().join("conversations"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [hex]);
}

#[tokio::test]
async fn trajectory_download_of_unknown_conversation() {
    let server = TestServer::start();
    let client = server.client();
    let resp = client
        .get(format!(
            "{}/api/file/download-trajectory/6a1f2d3c-0000-4000-8000-000000000000",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        detail(resp).await,
        (404, Value::from("Conversation not found"))
    );
    let resp = client
        .get(format!(
            "{}/api/file/download-trajectory/not-a-uuid",
            server.url
        ))
        .send()
        .await
        .unwrap();
    let (s, d) = detail(resp).await;
    assert_eq!(s, 422);
    assert_eq!(d[0]["type"], "uuid_parsing");
}

/// Paths the kernel refuses and paths the server may not write are the client's problem: a 400
/// or 403 saying what is wrong, never a 500.
#[tokio::test]
async fn impossible_and_forbidden_paths_are_client_errors() {
    let server = TestServer::start();
    let work = server.workdir().display().to_string();
    let client = server.client();
    let long_name = format!("{work}/{}", "n".repeat(300));
    let long_path = format!("{work}/{}", "d/".repeat(2100));
    let nul = format!("{work}/a\0b");
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("download", nul.clone(), 400, "NUL byte"),
        ("create_directory", nul.clone(), 400, "NUL byte"),
        ("upload", nul, 400, "NUL byte"),
        ("download", long_name.clone(), 400, "component is too long"),
        ("upload", long_name.clone(), 400, "component is too long"),
        ("create_directory", long_name, 400, "component is too long"),
        ("download", long_path.clone(), 400, "Path is too long"),
        (
            "create_directory",
            long_path.clone(),
            400,
            "Path is too long",
        ),
        ("upload", long_path, 400, "Path is too long"),
        // sysfs refuses new entries even to root.
        (
            "create_directory",
            "/sys/agent-server-test".into(),
            403,
            "Permission denied",
        ),
        (
            "upload",
            "/sys/kernel/agent-server-test".into(),
            403,
            "Permission denied",
        ),
    ];
    for (route, path, status, words) in cases {
        let url = format!("{}/api/file/{route}", server.url);
        let resp = match route {
            "download" => client.get(url).query(&[("path", &path)]).send().await,
            "create_directory" => client.post(url).query(&[("path", &path)]).send().await,
            _ => {
                let form = reqwest::multipart::Form::new().part(
                    "file",
                    reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("x"),
                );
                client
                    .post(url)
                    .query(&[("path", &path)])
                    .multipart(form)
                    .send()
                    .await
            }
        }
        .unwrap();
        let code = resp.status().as_u16();
        let (_, detail) = detail(resp).await;
        let short: String = path.chars().take(60).collect();
        assert_eq!(code, status, "{route} {short:?}: {detail}");
        assert!(
            detail.as_str().unwrap_or("").contains(words),
            "{route} {short:?}: {detail}"
        );
    }
}

/// An archive never reads kernel pseudo file systems (`/proc`, `/sys`: sizes that lie, reads
/// that never end), and an archive of a huge tree stops when its client leaves: the server then
/// stops on SIGTERM at once, leaving no scratch file.
#[tokio::test]
async fn archives_skip_kernel_files_and_stop_with_their_client() {
    let mut server = TestServer::start();
    let url = format!("{}/api/file/archive", server.url);
    let resp = server
        .client()
        .get(&url)
        .query(&[("path", "/proc/self"), ("format", "tar.gz")])
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.unwrap();
    let mut names = Vec::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_ref()));
    for entry in tar.entries().unwrap() {
        names.push(entry.unwrap().path().unwrap().display().to_string());
    }
    assert!(
        names.len() == 1 && names[0].ends_with("archive_manifest.json"),
        "{names:?}"
    );

    // The whole file system, and a client that gives up after a second.
    let gave_up = server
        .client()
        .get(&url)
        .query(&[("path", "/"), ("format", "tar.gz")])
        .timeout(Duration::from_secs(1))
        .send()
        .await;
    assert!(gave_up.is_err(), "an archive of / in a second: {gave_up:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let scratch = server.root_path().join("tmp");
    assert!(
        server.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(15)),
        "the server did not stop within 15 s of SIGTERM"
    );
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in the scratch directory: {left:?}");
}

/// What the server may not read is a 403 that says so, on download and on the directory
/// search (the server runs as `nobody` when the tests run as root).
#[tokio::test]
async fn unreadable_files_and_directories_are_403() {
    use std::os::unix::fs::PermissionsExt;
    let server = TestServer::start_with(ServerOptions {
        unprivileged: true,
        ..Default::default()
    });
    let locked_dir = server.workdir().join("locked");
    std::fs::create_dir_all(locked_dir.join("inner")).unwrap();
    let locked_file = server.workdir().join("secret.txt");
    std::fs::write(&locked_file, "no").unwrap();
    for p in [&locked_dir, &locked_file] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let client = server.client();
    let cases = [("download", &locked_file), ("search_subdirs", &locked_dir)];
    for (route, path) in cases {
        let resp = client
            .get(format!("{}/api/file/{route}", server.url))
            .query(&[("path", path)])
            .send()
            .await
            .unwrap();
        let code = resp.status().as_u16();
        let (_, detail) = detail(resp).await;
        assert_eq!(code, 403, "{route} {}: {detail}", path.display());
        assert!(
            detail.as_str().unwrap_or("").contains("Permission denied"),
            "{route}: {detail}"
        );
    }
    // The server itself is unharmed.
    let ok = client
        .get(format!("{}/api/file/search_subdirs", server.url))
        .query(&[("path", server.workdir())])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

/// A full disk (a 1 MiB tmpfs): an upload that does not fit fails with the OS's words, the file
/// it would have replaced is intact, no temp file is left, and the server keeps serving.
#[tokio::test]
#[ignore = "needs root to mount a tmpfs; run with --include-ignored"]
async fn full_disk_upload_fails_cleanly_and_changes_nothing() {
    let server = TestServer::start();
    let dir = crate::support::Tmpfs::mount("1m");
    let target = dir.path().join("data.bin");
    std::fs::write(&target, b"the old content").unwrap();

    let resp = upload(&server, target.to_str().unwrap(), vec![7u8; 3 << 20]).await;
    let code = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert!(code >= 400, "{code} {body}");
    assert!(body.contains("No space left on device"), "{body}");
    assert_eq!(std::fs::read(&target).unwrap(), b"the old content");
    // The temp file is removed in the background right after the failure.
    let names = || -> Vec<String> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    for _ in 0..100 {
        if names().len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(names(), ["data.bin"], "temp files left behind");
    // Still serving, and a small upload fits.
    let resp = upload(&server, target.to_str().unwrap(), b"new".to_vec()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(std::fs::read(&target).unwrap(), b"new");
}
