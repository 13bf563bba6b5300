//! Canvas extensions and Canvas App backends through the real binary: installs from local
//! directories and git, the records, bundle and icon serving, the backend lifecycle (a small
//! `python3` backend really started, probed, logged, proxied and killed as a group), the
//! cookie-authenticated `/app-backends` ingress with its WebSocket bridge, persistence across
//! a restart, and backends never outliving their server. Errors are worded like the reference.
//!
//! The backend tests need `python3`; without it they fail (they do not skip).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{call, ServerOptions, TestServer};

/// The public ingress the bridge tests configure; requests name it in `Host`.
const INGRESS: &str = "127.0.0.1:1";
/// The Canvas page's origin (a loopback control origin).
const CONTROL_ORIGIN: &str = "http://localhost:3000";

/// A small backend: `/health`, an echo of each request, a redirect, a WebSocket echo on any
/// upgrade, and a grandchild (`sleep`) in its process group.
const BACKEND: &str = r#"#!/usr/bin/env python3
import base64, hashlib, http.server, json, os, subprocess, sys
port, data = int(sys.argv[1]), sys.argv[2]
child = subprocess.Popen(["sleep", "300"])
print("backend up", port, "child", child.pid, flush=True)
print("env", json.dumps(sorted(os.environ)), flush=True)
print("to stderr", file=sys.stderr, flush=True)
open(os.path.join(data, "written"), "w").write("data")
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def reply(self, code, body):
        b = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.send_header("X-Backend", "test")
        self.end_headers()
        self.wfile.write(b)
    def do_GET(self):
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        if self.path == "/health":
            return self.reply(200, {"ok": True})
        if self.path == "/redir":
            self.send_response(302)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/exit":
            self.reply(200, {})
            self.wfile.flush()
            os._exit(7)
        self.reply(200, {"path": self.path, "cwd": os.getcwd(), "home": os.environ.get("HOME"),
                         "headers": {k.lower(): v for k, v in self.headers.items()}})
    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.reply(201, {"path": self.path, "body": self.rfile.read(n).decode()})
    def websocket(self):
        key = self.headers["Sec-WebSocket-Key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            op, n = head[0] & 15, head[1] & 127
            if n == 126:
                n = int.from_bytes(self.rfile.read(2), "big")
            mask = self.rfile.read(4) if head[1] & 128 else bytes(4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(n)))
            if op == 8:
                self.wfile.write(b"\x88\x00")
                self.wfile.flush()
                return
            if op in (1, 2):
                out = b"echo:" + payload
                self.wfile.write(bytes([128 | op, len(out)]) + out)
                self.wfile.flush()
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

/// Fails (never skips) when `python3` is missing: the backend tests need it.
fn require_python3() {
    let ok = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "python3 is required by the Canvas App backend tests");
}

/// A `.tar.gz` of `(name, contents, mode)` entries.
fn tgz(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (name, data, mode) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(*mode);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, name, *data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes a Canvas App package `name` under `root`: manifest, bundle, icon and (when
/// `backend` is set) a backend artifact running `script`.
fn package(root: &Path, name: &str, backend: Option<&str>) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("dist")).unwrap();
    std::fs::write(
        dir.join("dist/index.js"),
        "export default function mount(el){el.textContent='hello'}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("icon.svg"),
        "<svg xmlns=\"http://www.w3.org/2000/svg\"/>\n",
    )
    .unwrap();
    let mut manifest = json!({
        "schema_version": 1, "name": name, "display_name": "Test App", "version": "0.2.0",
        "description": "A test app", "entrypoint": "dist/index.js", "icon": "icon.svg",
        "contributes": {"pages": [{"id": "main", "title": "Main", "path": "/main"}]},
        "unknown_key": true,
    });
    if let Some(script) = backend {
        let archive = tgz(&[("server.py", script.as_bytes(), 0o755)]);
        std::fs::create_dir_all(dir.join("backend")).unwrap();
        std::fs::write(dir.join("backend/app.tar.gz"), &archive).unwrap();
        manifest["backend"] = json!({
            "schema_version": 1,
            "artifacts": {"linux-amd64": {"path": "backend/app.tar.gz", "sha256": sha256_hex(&archive)},
                          "linux-arm64": {"path": "backend/app.tar.gz", "sha256": sha256_hex(&archive)}},
            "argv": ["{artifact_dir}/server.py", "{port}", "{data_dir}"],
            "health": {"timeout_seconds": 20, "interval_seconds": 0.05},
            "inherit_environment": ["PATH", "LANG"],
        });
    }
    std::fs::write(
        dir.join("canvas-extension.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    dir
}

async fn install(srv: &TestServer, body: Value) -> (u16, Value) {
    call(
        srv,
        Method::POST,
        "/api/canvas-extensions/install",
        Some(body),
    )
    .await
}

/// Whether process `pid` exists and is not a zombie.
fn running(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Waits until `pid` is gone (or `secs` pass); true when it is.
fn gone_within(pid: i64, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while running(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Kills the process groups of backends a failed test left behind.
struct Reaper(Vec<i64>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            let pid = nix::unistd::Pid::from_raw(*pid as i32);
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// The pid of the grandchild the test backend prints in its logs.
fn grandchild(logs: &str) -> i64 {
    logs.split("child ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no child pid in logs: {logs}"))
}

/// A request to the ingress (`Host` is the configured public URL's).
fn ingress(srv: &TestServer, method: Method, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(method, format!("{}{path}", srv.url))
        .header("Host", INGRESS)
}

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let code = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn canvas_extensions_install_serve_and_uninstall_like_the_reference() {
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let pkg = package(src.path(), "hello-app", None);
    let mut srv = TestServer::start_with(ServerOptions::on_state(state.path()));
    let persistence = state.path().join("persistence");
    let installed_dir = std::fs::canonicalize(&persistence)
        .unwrap_or(persistence.clone())
        .join("canvas-extensions/installed");

    let (code, list) = call(&srv, Method::GET, "/api/canvas-extensions/installed", None).await;
    assert_eq!((code, list), (200, json!({"canvas_extensions": []})));
    let (code, err) = call(
        &srv,
        Method::GET,
        "/api/canvas-extensions/installed/hello-app",
        None,
    )
    .await;
    assert_eq!(
        (code, err),
        (
            404,
            json!({"detail": "Canvas extension 'hello-app' is not installed"})
        )
    );

    // A fresh install lands disabled (an `enabled` in the body is ignored); unknown manifest
    // keys are dropped and defaults filled in.
    let source = pkg.to_str().unwrap();
    let (code, info) = install(&srv, json!({"source": source, "enabled": true})).await;
    assert_eq!(code, 200, "{info}");
    let keys: Vec<&str> = info
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "name",
            "version",
            "description",
            "enabled",
            "source",
            "requested_ref",
            "resolved_ref",
            "repo_path",
            "installed_at",
            "install_path",
            "manifest"
        ]
    );
    assert_eq!(
        (&info["enabled"], &info["source"], &info["resolved_ref"]),
        (&json!(false), &json!(source), &Value::Null)
    );
    assert_eq!(
        info["install_path"],
        json!(installed_dir.join("hello-app").to_str().unwrap())
    );
    assert_eq!(
        info["manifest"],
        json!({"schema_version": 1, "name": "hello-app", "display_name": "Test App",
               "version": "0.2.0", "description": "A test app", "entrypoint": "dist/index.js",
               "contributes": {"pages": [{"id": "main", "title": "Main", "path": "/main"}]},
               "icon": "icon.svg"})
    );
    let ts = info["installed_at"].as_str().unwrap();
    assert!(ts.ends_with("+00:00") && ts.len() == 32, "{ts}");
    // The records, as pydantic writes them.
    let text = std::fs::read_to_string(installed_dir.join(".installed.json")).unwrap();
    assert!(
        text.starts_with(
            "{\n  \"extensions\": {\n    \"hello-app\": {\n      \"name\": \"hello-app\","
        ) && text.ends_with("\n    }\n  }\n}"),
        "{text}"
    );

    // Installing again needs force, which keeps `enabled`.
    let (code, err) = install(&srv, json!({"source": source})).await;
    assert_eq!(
        (code, err),
        (
            409,
            json!({"detail": "Canvas extension already installed. Use force=true to overwrite."})
        )
    );
    let (code, body) = call(
        &srv,
        Method::PATCH,
        "/api/canvas-extensions/installed/hello-app",
        Some(json!({"enabled": "yes"})),
    )
    .await;
    assert_eq!(
        (code, body),
        (200, json!({"name": "hello-app", "enabled": true}))
    );
    let (code, info) = install(&srv, json!({"source": source, "force": true})).await;
    assert_eq!((code, info["enabled"].clone()), (200, json!(true)));

    // The bundle: Starlette's FileResponse headers, ranges, no HEAD.
    let r = srv
        .client()
        .get(format!(
            "{}/api/canvas-extensions/installed/hello-app/bundle",
            srv.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["accept-ranges"], "bytes");
    let etag = h["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
    assert!(h.contains_key("last-modified"));
    let body = r.text().await.unwrap();
    assert!(body.starts_with("export default"));
    let r = srv
        .client()
        .get(format!(
            "{}/api/canvas-extensions/installed/hello-app/bundle",
            srv.url
        ))
        .header("Range", "bytes=7-13")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 7-13/{}", body.len()).as_str()
    );
    assert_eq!(
        r.headers()["etag"],
        etag.as_str(),
        "the ETag follows the file"
    );
    assert_eq!(r.text().await.unwrap(), "default");
    let r = srv
        .client()
        .head(format!(
            "{}/api/canvas-extensions/installed/hello-app/bundle",
            srv.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.headers()["allow"].to_str().unwrap()),
        (405, "GET")
    );

    // The icon: SVG, sandboxed.
    let r = srv
        .client()
        .get(format!(
            "{}/api/canvas-extensions/installed/hello-app/icon",
            srv.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    assert_eq!(
        r.headers()["content-security-policy"],
        "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["cache-control"], "no-cache");
    for (what, detail) in [("bundle", "bundle not found"), ("icon", "icon not found")] {
        let (code, err) = call(
            &srv,
            Method::GET,
            &format!("/api/canvas-extensions/installed/nope/{what}"),
            None,
        )
        .await;
        assert_eq!(
            (code, err),
            (
                404,
                json!({"detail": format!("Canvas extension 'nope' {detail}")})
            )
        );
    }

    // A manifest broken on disk: the record stays, its manifest reads as null, no bundle.
    let live = installed_dir.join("hello-app/canvas-extension.json");
    let good = std::fs::read(&live).unwrap();
    std::fs::write(&live, b"{not json").unwrap();
    let (code, info) = call(
        &srv,
        Method::GET,
        "/api/canvas-extensions/installed/hello-app",
        None,
    )
    .await;
    assert_eq!((code, info["manifest"].clone()), (200, Value::Null));
    let (code, _) = call(
        &srv,
        Method::GET,
        "/api/canvas-extensions/installed/hello-app/bundle",
        None,
    )
    .await;
    assert_eq!(code, 404);
    std::fs::write(&live, good).unwrap();

    // Bad inputs.
    let (code, err) = call(
        &srv,
        Method::GET,
        "/api/canvas-extensions/installed/Bad_Name",
        None,
    )
    .await;
    assert_eq!(
        (code, err),
        (
            422,
            json!({"detail": [{"type": "string_pattern_mismatch", "loc": ["path", "extension_name"],
                "msg": "String should match pattern '^[a-z0-9]+(?:-[a-z0-9]+)*$'", "input": "Bad_Name",
                "ctx": {"pattern": "^[a-z0-9]+(?:-[a-z0-9]+)*$"}}]})
        )
    );
    let (code, err) = call(
        &srv,
        Method::PATCH,
        "/api/canvas-extensions/installed/Bad_Name",
        Some(json!({})),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(
        (
            err["detail"][0]["type"].clone(),
            err["detail"][1]["loc"].clone()
        ),
        (json!("string_pattern_mismatch"), json!(["body", "enabled"]))
    );
    let (code, err) = install(&srv, json!({})).await;
    assert_eq!(
        (code, err),
        (
            422,
            json!({"detail": [{"type": "missing", "loc": ["body", "source"], "msg": "Field required", "input": {}}]})
        )
    );
    let (code, err) = install(&srv, json!({"source": ""})).await;
    assert_eq!(
        (code, err["detail"][0]["type"].clone()),
        (422, json!("string_too_short"))
    );
    let (code, err) = call(
        &srv,
        Method::PATCH,
        "/api/canvas-extensions/installed/nope",
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(
        (code, err),
        (
            404,
            json!({"detail": "Canvas extension 'nope' is not installed"})
        )
    );

    // Invalid packages and sources, each with the reference's words.
    let invalid =
        json!({"detail": "Invalid canvas extension. Ensure the manifest is well-formed."});
    let bad = src.path().join("bad-app");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("index.js"), "x").unwrap();
    for manifest in [
        json!({"schema_version": 2, "name": "bad-app", "display_name": "B", "version": "1", "entrypoint": "index.js"}),
        json!({"schema_version": 1, "name": "Bad_App", "display_name": "B", "version": "1", "entrypoint": "index.js"}),
        json!({"schema_version": 1, "name": "bad-app", "display_name": "B", "version": 1, "entrypoint": "index.js"}),
        json!({"schema_version": 1, "name": "bad-app", "display_name": "B", "version": "1", "entrypoint": "../index.js"}),
        json!({"schema_version": 1, "name": "bad-app", "display_name": "B", "version": "1", "entrypoint": "missing.js"}),
        json!({"schema_version": 1, "name": "bad-app", "display_name": "B", "version": "1", "entrypoint": "index.js",
               "backend": {"schema_version": 1, "artifacts": {"linux-amd64": {"path": "b.tar.gz", "sha256": "a".repeat(64)}},
                           "argv": ["/bin/sh"]}}),
    ] {
        std::fs::write(bad.join("canvas-extension.json"), manifest.to_string()).unwrap();
        let (code, err) = install(&srv, json!({"source": bad.to_str().unwrap()})).await;
        assert_eq!((code, &err), (422, &invalid), "{manifest}");
    }
    std::fs::remove_file(bad.join("canvas-extension.json")).unwrap();
    let (code, err) = install(&srv, json!({"source": bad.to_str().unwrap()})).await;
    assert_eq!(
        (code, err["detail"].as_str().unwrap_or_default()),
        (422, "No canvas-extension.json found at the resolved location. Source plus Path must point at the extension's own directory, not the repository root.")
    );
    let prefix = "Could not read canvas extension source: ";
    for (source, repo_path, message) in [
        ("/nonexistent/x", None, "Local extension path does not exist: /nonexistent/x".to_string()),
        (
            "relative-word",
            None,
            "Unable to parse extension source: relative-word. Expected formats: 'github:owner/repo', git URL, or local path".into(),
        ),
        (
            "github:owner",
            None,
            "Invalid GitHub shorthand format: github:owner. Expected format: github:owner/repo[/path]".into(),
        ),
        (
            "https://user:tok@example.invalid/o/r.git",
            None,
            "Failed to fetch extension from https://****@example.invalid/o/r.git".into(),
        ),
        (
            "github:o/r/sub",
            Some("x"),
            "GitHub shorthand github:o/r/sub already names a subdirectory; do not also pass repo_path".into(),
        ),
        (
            source,
            Some("../.."),
            format!("Subdirectory '../..' escapes local source '{source}'"),
        ),
        (
            source,
            Some("/nope/"),
            format!("Subdirectory '/nope/' not found in local source '{source}'"),
        ),
    ] {
        let (code, err) = install(&srv, json!({"source": source, "repo_path": repo_path})).await;
        assert_eq!(
            (code, err),
            (400, json!({"detail": format!("{prefix}{message}")})),
            "{source}"
        );
    }

    // A package copied into place by hand is discovered (disabled) after the tracked ones.
    let manual = package(src.path(), "manual-app", None);
    let copy = std::process::Command::new("cp")
        .arg("-r")
        .arg(&manual)
        .arg(installed_dir.join("manual-app"))
        .status()
        .unwrap();
    assert!(copy.success());
    let (_, list) = call(&srv, Method::GET, "/api/canvas-extensions/installed", None).await;
    let names: Vec<(Value, Value)> = list["canvas_extensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].clone(), e["source"].clone()))
        .collect();
    assert_eq!(
        names,
        [
            (json!("hello-app"), json!(source)),
            (json!("manual-app"), json!("local"))
        ]
    );

    // The state survives a restart.
    srv.stop_with(nix::sys::signal::Signal::SIGTERM);
    let srv = TestServer::start_with(ServerOptions::on_state(state.path()));
    let (code, info) = call(
        &srv,
        Method::GET,
        "/api/canvas-extensions/installed/hello-app",
        None,
    )
    .await;
    assert_eq!((code, info["enabled"].clone()), (200, json!(true)));

    // Uninstall removes the package and its record.
    let (code, body) = call(
        &srv,
        Method::DELETE,
        "/api/canvas-extensions/installed/hello-app",
        None,
    )
    .await;
    assert_eq!(
        (code, body),
        (
            200,
            json!({"message": "Canvas extension 'hello-app' uninstalled"})
        )
    );
    assert!(!installed_dir.join("hello-app").exists());
    let (code, _) = call(
        &srv,
        Method::DELETE,
        "/api/canvas-extensions/installed/hello-app",
        None,
    )
    .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn canvas_extensions_install_from_git_with_ref_and_repo_path() {
    let src = tempfile::tempdir().unwrap();
    let repo = src.path().join("mono");
    package(&repo.join("packages"), "inner-app", None);
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(ok.status.success(), "{ok:?}");
        String::from_utf8_lossy(&ok.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "one"]);
    git(&["tag", "v1"]);
    let commit = git(&["rev-parse", "HEAD"]);
    let srv = TestServer::start();
    let url = format!("file://{}", repo.display());
    let (code, info) = install(
        &srv,
        json!({"source": url, "ref": "v1", "repo_path": "packages/inner-app"}),
    )
    .await;
    assert_eq!(code, 200, "{info}");
    assert_eq!(
        (
            &info["name"],
            &info["requested_ref"],
            &info["resolved_ref"],
            &info["repo_path"]
        ),
        (
            &json!("inner-app"),
            &json!("v1"),
            &json!(commit),
            &json!("packages/inner-app")
        )
    );
    // A git install's revision is its commit.
    let (_, status) = call(
        &srv,
        Method::GET,
        "/api/canvas-extensions/installed/inner-app/backend",
        None,
    )
    .await;
    assert_eq!(
        (status["state"].clone(), status["revision"].clone()),
        (json!("unsupported"), json!(commit))
    );
    let (code, err) = install(&srv, json!({"source": url, "ref": "nosuchref"})).await;
    assert_eq!(
        (code, err),
        (
            400,
            json!({"detail": format!("Could not read canvas extension source: Failed to fetch extension from {url}")})
        )
    );
}

#[tokio::test]
async fn canvas_app_backends_run_behind_the_cookie_bridge() {
    require_python3();
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let pkg = package(src.path(), "live-app", Some(BACKEND));
    let mut opts = ServerOptions::on_state(state.path());
    opts.env.push((
        "OH_APP_BACKEND_PUBLIC_URL".into(),
        format!("http://{INGRESS}/"),
    ));
    let srv = TestServer::start_with(opts);
    let mut reaper = Reaper(Vec::new());
    let base = "/api/canvas-extensions/installed/live-app/backend";

    let (_, info) = srv_info(&srv).await;
    assert_eq!(
        info["app_backend_ingress_url"],
        format!("http://{INGRESS}/")
    );
    assert!(info["capabilities"]
        .as_array()
        .unwrap()
        .contains(&json!("canvas_app_backend_bridge_v1")));

    let (code, _) = install(&srv, json!({"source": pkg.to_str().unwrap()})).await;
    assert_eq!(code, 200);
    let (code, status) = call(&srv, Method::GET, base, None).await;
    assert_eq!(code, 200);
    let revision = status["revision"].as_str().unwrap().to_string();
    assert!(revision.starts_with("sha256:"), "{status}");
    assert_eq!(
        status,
        json!({"name": "live-app", "state": "stopped", "revision": revision,
               "prepared_revision": null, "pid": null, "port": null, "detail": null})
    );
    let (_, missing) = call(
        &srv,
        Method::GET,
        "/api/canvas-extensions/installed/nope/backend",
        None,
    )
    .await;
    assert_eq!(
        missing,
        json!({"name": "nope", "state": "missing", "revision": null, "prepared_revision": null,
               "pid": null, "port": null, "detail": "Canvas App is not installed or its manifest is invalid"})
    );

    // Approval of the exact revision first.
    let rev = json!({"revision": revision});
    let (code, err) = call(
        &srv,
        Method::POST,
        &format!("{base}/start"),
        Some(rev.clone()),
    )
    .await;
    assert_eq!(
        (code, err),
        (
            409,
            json!({"detail": "backend revision must be prepared before start"})
        )
    );
    let (code, err) = call(
        &srv,
        Method::POST,
        &format!("{base}/prepare"),
        Some(json!({"revision": "sha256:other"})),
    )
    .await;
    assert_eq!(
        (code, err),
        (
            409,
            json!({"detail": "approval revision does not match installed revision"})
        )
    );
    let (code, status) = call(
        &srv,
        Method::POST,
        &format!("{base}/prepare"),
        Some(rev.clone()),
    )
    .await;
    assert_eq!(
        (code, status["prepared_revision"].clone()),
        (200, json!(revision))
    );
    let backends = state.path().join("persistence/canvas-extensions/backends");
    let approval: Value =
        serde_json::from_slice(&std::fs::read(backends.join("approvals/live-app.json")).unwrap())
            .unwrap();
    let keys: Vec<&str> = approval
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["revision", "platform", "artifact_sha256", "artifact_dir"]
    );
    let artifact_dir = PathBuf::from(approval["artifact_dir"].as_str().unwrap());
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    };
    assert_eq!(
        (mode(&artifact_dir), mode(&artifact_dir.join("server.py"))),
        (0o555, 0o555)
    );

    // Start: ready, with a pid and port; idempotent while running.
    let (code, status) = call(
        &srv,
        Method::POST,
        &format!("{base}/start"),
        Some(rev.clone()),
    )
    .await;
    assert_eq!(
        (code, status["state"].clone()),
        (200, json!("ready")),
        "{status}"
    );
    let pid = status["pid"].as_i64().unwrap();
    reaper.0.push(pid);
    assert!(running(pid));
    let (_, again) = call(
        &srv,
        Method::POST,
        &format!("{base}/start"),
        Some(rev.clone()),
    )
    .await;
    assert_eq!(again["pid"], json!(pid));
    let (code, err) = call(
        &srv,
        Method::POST,
        &format!("{base}/start"),
        Some(json!({"revision": "other"})),
    )
    .await;
    assert_eq!(
        (code, err),
        (
            409,
            json!({"detail": "a different backend revision is already running"})
        )
    );
    let (code, err) = call(&srv, Method::DELETE, &format!("{base}/data"), None).await;
    assert_eq!(
        (code, err),
        (
            409,
            json!({"detail": "stop the backend before deleting its data"})
        )
    );
    let (code, err) = install(
        &srv,
        json!({"source": pkg.to_str().unwrap(), "force": true}),
    )
    .await;
    assert_eq!(
        (code, err),
        (
            409,
            json!({"detail": "Stop running Canvas App backends before a forced install"})
        )
    );

    // Logs: labelled chunks, bounded; the minimal environment; the data dir as HOME.
    let (_, logs) = call(&srv, Method::GET, &format!("{base}/logs"), None).await;
    let text = logs["logs"].as_str().unwrap().to_string();
    assert!(
        text.contains("[stdout] backend up") && text.contains("[stderr] to stderr\n"),
        "{text}"
    );
    // Only the allowed variables (an interpreter shim may add its own), never the server's.
    let env_line = text.lines().find(|l| l.contains("env [")).unwrap();
    for var in ["\"HOME\"", "\"PATH\"", "\"OH_AGENT_SERVER_CHILD_OF\""] {
        assert!(env_line.contains(var), "{var} missing: {env_line}");
    }
    for var in [
        "RUST_LOG",
        "TMPDIR",
        "OH_PERSISTENCE_DIR",
        "OH_CONVERSATIONS_PATH",
        "OH_APP_BACKEND",
    ] {
        assert!(!env_line.contains(var), "{var} leaked: {env_line}");
    }
    let child = grandchild(&text);
    assert!(running(child));
    let (_, tail) = call(
        &srv,
        Method::GET,
        &format!("{base}/logs?limit_bytes=10"),
        None,
    )
    .await;
    assert_eq!(
        (
            tail["logs"].as_str().unwrap().len(),
            tail["truncated"].clone()
        ),
        (10, json!(true))
    );
    let (code, _) = call(
        &srv,
        Method::GET,
        &format!("{base}/logs?limit_bytes=0"),
        None,
    )
    .await;
    assert_eq!(code, 422);
    assert!(backends.join("data/live-app/written").exists());
    assert!(backends.join(format!("run/{pid}.json")).exists());

    // The bridge: a session for the Canvas origin, then the cookie opens the proxy.
    let r = ingress(&srv, Method::GET, "/app-backends/live-app/hi")
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await, (401, json!({"detail": "Unauthorized"})));
    let r = reqwest::Client::new()
        .post(format!("{}/app-backends/live-app/session", srv.url))
        .header("Origin", CONTROL_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(r).await,
        (
            421,
            json!({"detail": "Canvas App request must use the configured ingress origin"})
        )
    );
    let r = ingress(&srv, Method::POST, "/app-backends/live-app/session")
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(r).await,
        (403, json!({"detail": "Origin is not allowed"}))
    );
    let r = ingress(&srv, Method::POST, "/app-backends/live-app/session")
        .header("Origin", format!("http://{INGRESS}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(r).await,
        (
            409,
            json!({"detail": "Canvas App ingress must use a separate browser origin"})
        )
    );
    let r = ingress(&srv, Method::POST, "/app-backends/nope/session")
        .header("Origin", CONTROL_ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(r).await,
        (
            503,
            json!({"detail": "Internal Server Error", "exception": "503: Canvas App backend is not ready"})
        )
    );
    let r = ingress(&srv, Method::POST, "/app-backends/live-app/session")
        .header("Origin", CONTROL_ORIGIN)
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    let (code, session) = json_of(r).await;
    assert_eq!(code, 200, "{session}");
    assert_eq!(
        session["ingress_url"],
        format!("http://{INGRESS}/app-backends/live-app/")
    );
    assert_eq!(
        session["iframe_sandbox"],
        "allow-forms allow-modals allow-popups allow-same-origin allow-scripts"
    );
    assert!(session["expires_at"].as_str().unwrap().ends_with('Z'));
    let (token, attributes) = cookie.split_once(';').unwrap();
    assert!(
        token.starts_with("oh_app_backend_session=") && token.len() == 23 + 43,
        "{cookie}"
    );
    assert_eq!(
        attributes,
        " HttpOnly; Max-Age=300; Path=/app-backends/live-app; SameSite=none; Secure; Partitioned"
    );

    // Through the proxy: credentials stripped from the query and headers; the package as cwd.
    let r = ingress(
        &srv,
        Method::GET,
        "/app-backends/live-app/foo/bar?x=1&session_api_key=zz&y=2",
    )
    .header("Cookie", token)
    .header("X-Session-API-Key", "k")
    .header("Authorization", "Bearer t")
    .header("X-Custom", "kept")
    .send()
    .await
    .unwrap();
    assert_eq!(r.headers()["x-backend"], "test");
    assert!(r.headers().get("content-length").is_none(), "streamed");
    let (code, seen) = json_of(r).await;
    assert_eq!(code, 200);
    assert_eq!(seen["path"], "/foo/bar?x=1&y=2");
    let headers = seen["headers"].as_object().unwrap();
    assert_eq!(headers["x-custom"], "kept");
    for stripped in ["cookie", "authorization", "x-session-api-key"] {
        assert!(!headers.contains_key(stripped), "{stripped} forwarded");
    }
    assert!(seen["cwd"]
        .as_str()
        .unwrap()
        .ends_with("/canvas-extensions/installed/live-app"));
    assert!(seen["home"]
        .as_str()
        .unwrap()
        .ends_with("/backends/data/live-app/home"));
    let r = ingress(&srv, Method::POST, "/app-backends/live-app/post")
        .header("Cookie", token)
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(r).await,
        (403, json!({"detail": "Origin is not allowed"}))
    );
    let r = ingress(&srv, Method::POST, "/app-backends/live-app/post")
        .header("Cookie", token)
        .header("Origin", format!("http://{INGRESS}"))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(r).await,
        (201, json!({"path": "/post", "body": "payload"}))
    );
    let r = ingress(&srv, Method::GET, "/app-backends/live-app/redir")
        .header("Cookie", token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(r).await,
        (
            502,
            json!({"detail": "Internal Server Error", "exception": "502: Upstream redirect is not allowed"})
        )
    );
    let r = ingress(&srv, Method::GET, "/app-backends/live-app/a/%252e%252e/b")
        .header("Cookie", token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(r).await,
        (400, json!({"detail": "Invalid backend path"}))
    );

    // The WebSocket bridge: refused without the ingress Origin, then an echo.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ws_url = format!("ws://127.0.0.1:{}/app-backends/live-app/ws?q=1", srv.port);
    let mut request = ws_url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("host", INGRESS.parse().unwrap());
    request
        .headers_mut()
        .insert("cookie", token.parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request.clone()).await;
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 403),
        "{refused:?}"
    );
    request
        .headers_mut()
        .insert("origin", format!("http://{INGRESS}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request.clone())
        .await
        .unwrap();
    use futures::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::text("ping"))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "echo:ping");

    // Revoking the session ends the bridged socket and closes the proxy.
    let r = ingress(&srv, Method::DELETE, "/app-backends/live-app/session")
        .header("Origin", CONTROL_ORIGIN)
        .header("Cookie", token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["set-cookie"],
        "oh_app_backend_session=\"\"; HttpOnly; Max-Age=0; Path=/app-backends/live-app; SameSite=none; Secure; Partitioned"
    );
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))
                | None
                | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the bridged socket outlived its session");
    let r = ingress(&srv, Method::GET, "/app-backends/live-app/hi")
        .header("Cookie", token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Stop: the whole process group is gone, the run record too; data is kept until deleted.
    let (code, status) = call(&srv, Method::POST, &format!("{base}/stop"), None).await;
    assert_eq!(
        (code, status["state"].clone(), status["pid"].clone()),
        (200, json!("stopped"), Value::Null)
    );
    assert!(gone_within(pid, 5), "backend {pid} survived stop");
    assert!(gone_within(child, 5), "its child {child} survived stop");
    assert!(!backends.join(format!("run/{pid}.json")).exists());
    let (_, logs) = call(&srv, Method::GET, &format!("{base}/logs"), None).await;
    assert!(
        logs["logs"].as_str().unwrap().contains("backend up"),
        "logs survive a stop"
    );
    let (code, status) = call(&srv, Method::DELETE, &format!("{base}/data"), None).await;
    assert_eq!((code, status["state"].clone()), (200, json!("stopped")));
    assert!(!backends.join("data/live-app").exists());

    // A backend that dies is reported with its exit code and reaped.
    let (_, status) = call(
        &srv,
        Method::POST,
        &format!("{base}/start"),
        Some(rev.clone()),
    )
    .await;
    let pid = status["pid"].as_i64().unwrap();
    reaper.0.push(pid);
    let r = ingress(&srv, Method::POST, "/app-backends/live-app/session")
        .header("Origin", CONTROL_ORIGIN)
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    let token = cookie.split(';').next().unwrap().to_string();
    let r = ingress(&srv, Method::GET, "/app-backends/live-app/exit")
        .header("Cookie", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let (_, status) = call(&srv, Method::GET, base, None).await;
        // (A status taken while it exits may first report a failed probe.)
        if status["detail"] == "Backend exited with code 7" || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (
            status["state"].clone(),
            status["detail"].clone(),
            status["pid"].clone()
        ),
        (
            json!("unhealthy"),
            json!("Backend exited with code 7"),
            Value::Null
        )
    );
    let r = ingress(&srv, Method::GET, "/app-backends/live-app/hi")
        .header("Cookie", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);

    // Disabling stops a running backend; uninstalling keeps its data and approval.
    let (_, status) = call(
        &srv,
        Method::POST,
        &format!("{base}/start"),
        Some(rev.clone()),
    )
    .await;
    let pid = status["pid"].as_i64().unwrap();
    reaper.0.push(pid);
    let (code, _) = call(
        &srv,
        Method::PATCH,
        "/api/canvas-extensions/installed/live-app",
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(code, 200);
    assert!(gone_within(pid, 5), "disable left the backend running");
    let (code, _) = call(
        &srv,
        Method::DELETE,
        "/api/canvas-extensions/installed/live-app",
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert!(backends.join("approvals/live-app.json").exists());
    assert!(backends.join("data/live-app").exists());
    let (_, status) = call(&srv, Method::GET, base, None).await;
    assert_eq!(
        (status["state"].clone(), status["prepared_revision"].clone()),
        (json!("missing"), json!(revision))
    );
}

async fn srv_info(srv: &TestServer) -> (u16, Value) {
    call(srv, Method::GET, "/server_info", None).await
}

#[tokio::test]
async fn canvas_app_backends_never_outlive_their_server() {
    require_python3();
    let src = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let pkg = package(src.path(), "live-app", Some(BACKEND));
    let base = "/api/canvas-extensions/installed/live-app/backend";
    let mut reaper = Reaper(Vec::new());

    // Starts the backend; answers the pid of it and of its child.
    async fn start(srv: &TestServer, base: &str) -> (i64, i64) {
        let (_, status) = call(srv, Method::GET, base, None).await;
        let rev = json!({"revision": status["revision"]});
        let (code, _) = call(
            srv,
            Method::POST,
            &format!("{base}/prepare"),
            Some(rev.clone()),
        )
        .await;
        assert_eq!(code, 200);
        let (_, status) = call(srv, Method::POST, &format!("{base}/start"), Some(rev)).await;
        assert_eq!(status["state"], "ready", "{status}");
        let (_, logs) = call(srv, Method::GET, &format!("{base}/logs"), None).await;
        (
            status["pid"].as_i64().unwrap(),
            grandchild(logs["logs"].as_str().unwrap()),
        )
    }

    // A server stopped normally stops its backends.
    let mut srv = TestServer::start_with(ServerOptions::on_state(state.path()));
    let (code, _) = install(&srv, json!({"source": pkg.to_str().unwrap()})).await;
    assert_eq!(code, 200);
    let (pid, child) = start(&srv, base).await;
    reaper.0.push(pid);
    srv.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert!(gone_within(pid, 2), "SIGTERM'd server left backend {pid}");
    assert!(gone_within(child, 2), "SIGTERM'd server left {child}");

    // A killed server cannot; the next server on the same state kills what it left.
    let mut srv = TestServer::start_with(ServerOptions::on_state(state.path()));
    let (pid, child) = start(&srv, base).await;
    reaper.0.push(pid);
    srv.stop_with(nix::sys::signal::Signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        running(pid) && running(child),
        "the backend should outlive a SIGKILL"
    );
    let run_record = state.path().join(format!(
        "persistence/canvas-extensions/backends/run/{pid}.json"
    ));
    assert!(run_record.exists());
    let srv = TestServer::start_with(ServerOptions::on_state(state.path()));
    assert!(gone_within(pid, 5), "restart left backend {pid} running");
    assert!(gone_within(child, 5), "restart left {child} running");
    assert!(!run_record.exists(), "the run record outlived its backend");
    let (_, status) = call(&srv, Method::GET, base, None).await;
    assert_eq!(status["state"], "stopped");
    assert_eq!(
        status["prepared_revision"], status["revision"],
        "the approval persists"
    );
}
