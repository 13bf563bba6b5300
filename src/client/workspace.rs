//! [`RemoteWorkspace`]: bash, file and git calls against a running agent server, on the same wire
//! protocol as the Python SDK's `RemoteWorkspace`.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use reqwest::{Method, RequestBuilder, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::ClientError;

/// Header carrying the session API key.
pub const SESSION_KEY_HEADER: &str = "X-Session-API-Key";

/// How to reach a server.
#[derive(Debug, Clone)]
pub struct WorkspaceOptions {
    /// Base URL, e.g. `http://127.0.0.1:8000` (a trailing `/` is removed).
    pub host: String,
    /// Session API key sent as `X-Session-API-Key`.
    pub api_key: Option<String>,
    /// Directory in the sandbox that relative git paths are joined onto.
    pub working_dir: String,
    /// Default read timeout of the HTTP client (Python: 600 s).
    pub read_timeout: Duration,
    /// Scope every bash/file/git call to `/api/conversations/{id}` instead of `/api`.
    pub runtime_conversation_id: Option<uuid::Uuid>,
}

impl WorkspaceOptions {
    /// Options for `host` with the reference defaults.
    pub fn new(host: impl Into<String>) -> Self {
        WorkspaceOptions {
            host: host.into(),
            api_key: None,
            working_dir: "/workspace".into(),
            read_timeout: Duration::from_secs(600),
            runtime_conversation_id: None,
        }
    }
}

/// Result of [`RemoteWorkspace::execute_command`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandResult {
    pub command: String,
    /// Process exit code; `-1` on timeout, `-N` when killed by signal N.
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
    /// The client gave up waiting (the remote command is not stopped, as in the reference).
    pub timeout_occurred: bool,
}

/// Result of a file transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileOperationResult {
    pub success: bool,
    pub source_path: String,
    pub destination_path: String,
    pub file_size: Option<u64>,
    pub error: Option<String>,
}

/// One entry of `GET /api/git/changes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitChange {
    /// `ADDED`, `DELETED`, `UPDATED` or `MOVED`.
    pub status: String,
    pub path: String,
}

/// `GET /api/git/diff`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitDiff {
    pub modified: Option<String>,
    pub original: Option<String>,
}

/// A running agent server's workspace API. Cheap to clone (shares the HTTP connection pool).
#[derive(Debug, Clone)]
pub struct RemoteWorkspace {
    host: String,
    api_key: Option<String>,
    working_dir: String,
    prefix: String,
    http: reqwest::Client,
}

impl RemoteWorkspace {
    /// A workspace for the server at `host` with an optional session key.
    pub fn new(host: impl Into<String>, api_key: Option<String>) -> Result<Self, ClientError> {
        let mut opts = WorkspaceOptions::new(host);
        opts.api_key = api_key;
        Self::with_options(opts)
    }

    /// A workspace from full options.
    pub fn with_options(opts: WorkspaceOptions) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(opts.read_timeout)
            .build()?;
        let prefix = match opts.runtime_conversation_id {
            Some(id) => format!("/api/conversations/{id}"),
            None => "/api".into(),
        };
        Ok(RemoteWorkspace {
            host: opts.host.trim_end_matches('/').to_string(),
            api_key: opts.api_key.filter(|k| !k.is_empty()),
            working_dir: opts.working_dir,
            prefix,
            http,
        })
    }

    /// Base URL without a trailing slash.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The session API key, if any.
    pub fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    /// Directory relative git paths are joined onto.
    pub fn working_dir(&self) -> &str {
        &self.working_dir
    }

    /// Changes the working directory (launchers set the reference defaults).
    pub fn set_working_dir(&mut self, dir: impl Into<String>) {
        self.working_dir = dir.into();
    }

    /// A request to `{host}{path}` carrying the session key.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{}", self.host, path));
        if let Some(k) = &self.api_key {
            req = req.header(SESSION_KEY_HEADER, k);
        }
        req
    }

    /// Sends `req` and turns a non-2xx answer into [`ClientError::Status`].
    pub async fn send(req: RequestBuilder) -> Result<Response, ClientError> {
        let resp = req.send().await?;
        check(resp).await
    }

    /// Sends `req` and decodes a JSON answer.
    pub async fn send_json<T: serde::de::DeserializeOwned>(
        req: RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = Self::send(req).await?;
        let url = resp.url().to_string();
        let bytes = resp.bytes().await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol(format!("{url}: {e}: {}", preview(&bytes))))
    }

    /// `GET /health` without credentials, 5 s timeout: true iff 2xx.
    pub async fn alive(&self) -> bool {
        health_ok(&self.http, &self.host, Duration::from_secs(5)).await
    }

    /// `GET /server_info`.
    pub async fn server_info(&self) -> Result<Value, ClientError> {
        Self::send_json(self.request(Method::GET, "/server_info")).await
    }

    /// Starts `command` (`POST …/bash/start_bash_command`) and returns its id.
    pub async fn start_command(
        &self,
        command: &str,
        cwd: Option<&str>,
        timeout: Duration,
    ) -> Result<String, ClientError> {
        let secs = timeout.as_secs().max(1);
        let mut body = json!({"command": command, "timeout": secs});
        if let Some(cwd) = cwd {
            body["cwd"] = json!(cwd);
        }
        let req = self
            .request(
                Method::POST,
                &format!("{}/bash/start_bash_command", self.prefix),
            )
            .timeout(timeout + Duration::from_secs(5))
            .json(&body);
        let cmd: Value = Self::send_json(req).await?;
        match cmd.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => Ok(id.to_string()),
            _ => Err(ClientError::Protocol(format!(
                "start_bash_command returned no id: {cmd}"
            ))),
        }
    }

    /// `POST …/bash/bash_commands/{id}/stop`; an unknown id (404) is not an error.
    pub async fn stop_command(&self, command_id: &str) -> Result<(), ClientError> {
        let req = self
            .request(
                Method::POST,
                &format!("{}/bash/bash_commands/{command_id}/stop", self.prefix),
            )
            .timeout(Duration::from_secs(60));
        match Self::send(req).await {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The latest `BashOutput` (of `command_id`, or of any command); `None` when there is none.
    pub async fn get_command_output(
        &self,
        command_id: Option<&str>,
    ) -> Result<Option<Value>, ClientError> {
        let mut q = vec![
            ("kind__eq", "BashOutput".to_string()),
            ("sort_order", "TIMESTAMP_DESC".into()),
            ("limit", "1".into()),
        ];
        if let Some(id) = command_id {
            q.push(("command_id__eq", id.into()));
        }
        let page: Value = Self::send_json(
            self.request(
                Method::GET,
                &format!("{}/bash/bash_events/search", self.prefix),
            )
            .query(&q),
        )
        .await?;
        Ok(page
            .get("items")
            .and_then(Value::as_array)
            .and_then(|a| a.first().cloned()))
    }

    /// Runs `command` and waits for it (at most `timeout`), collecting stdout and stderr.
    ///
    /// Unlike the Python client, transport errors are returned as `Err` instead of being folded
    /// into a result with exit code -1; a client-side timeout still gives `timeout_occurred`.
    pub async fn execute_command(
        &self,
        command: &str,
        cwd: Option<&str>,
        timeout: Duration,
    ) -> Result<CommandResult, ClientError> {
        self.execute_command_streaming(command, cwd, timeout, |_, _| {})
            .await
    }

    /// Like [`execute_command`](Self::execute_command), calling `on_output(stdout, stderr)` for
    /// every output chunk as soon as the server publishes it.
    pub async fn execute_command_streaming(
        &self,
        command: &str,
        cwd: Option<&str>,
        timeout: Duration,
        mut on_output: impl FnMut(&str, &str),
    ) -> Result<CommandResult, ClientError> {
        let started = Instant::now();
        let id = self.start_command(command, cwd, timeout).await?;
        let mut result = CommandResult {
            command: command.to_string(),
            exit_code: -1,
            stdout: String::new(),
            stderr: String::new(),
            timeout_occurred: false,
        };
        let mut last_order: i64 = -1;
        let mut seen = std::collections::HashSet::new();
        let mut pause = Duration::from_millis(10);
        let url = format!("{}/bash/bash_events/search", self.prefix);
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                result.timeout_occurred = true;
                result.exit_code = -1;
                result.stderr.push_str(&format!(
                    "Command timed out after {} seconds",
                    timeout.as_secs()
                ));
                return Ok(result);
            }
            let mut q = vec![
                ("kind__eq", "BashOutput".to_string()),
                ("command_id__eq", id.clone()),
                ("sort_order", "TIMESTAMP".into()),
                ("limit", "100".into()),
            ];
            if last_order >= 0 {
                q.push(("order__gt", last_order.to_string()));
            }
            let page: Value = Self::send_json(
                self.request(Method::GET, &url)
                    .query(&q)
                    .timeout(left.max(Duration::from_secs(1))),
            )
            .await?;
            let items = page.get("items").and_then(Value::as_array);
            let mut got = false;
            let mut exit = None;
            for item in items.into_iter().flatten() {
                if item.get("kind").and_then(Value::as_str) != Some("BashOutput") {
                    continue;
                }
                let eid = item.get("id").and_then(Value::as_str).unwrap_or_default();
                if !seen.insert(eid.to_string()) {
                    continue;
                }
                got = true;
                if let Some(o) = item.get("order").and_then(Value::as_i64) {
                    last_order = last_order.max(o);
                }
                let out = item.get("stdout").and_then(Value::as_str).unwrap_or("");
                let err = item.get("stderr").and_then(Value::as_str).unwrap_or("");
                if !out.is_empty() || !err.is_empty() {
                    on_output(out, err);
                }
                result.stdout.push_str(out);
                result.stderr.push_str(err);
                if let Some(code) = item.get("exit_code").and_then(Value::as_i64) {
                    exit = Some(code);
                }
            }
            if let Some(code) = exit {
                result.exit_code = code;
                return Ok(result);
            }
            // More output may already be waiting when a full page arrived: poll again at once.
            if !got {
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            } else {
                pause = Duration::from_millis(10);
            }
        }
    }

    /// Uploads the local file `source` to the absolute path `dest`, streaming it (any size).
    pub async fn file_upload(
        &self,
        source: &Path,
        dest: &str,
    ) -> Result<FileOperationResult, ClientError> {
        let io = |e| ClientError::Io {
            path: source.display().to_string(),
            source: e,
        };
        let file = tokio::fs::File::open(source).await.map_err(io)?;
        let len = file.metadata().await.map_err(io)?.len();
        let name = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "upload".into());
        let stream = tokio_util::io::ReaderStream::new(file);
        let part =
            reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), len)
                .file_name(name);
        self.upload_part(part, &source.display().to_string(), dest)
            .await
    }

    /// Uploads `data` to the absolute path `dest`.
    pub async fn file_upload_bytes(
        &self,
        data: Vec<u8>,
        dest: &str,
    ) -> Result<FileOperationResult, ClientError> {
        let part = reqwest::multipart::Part::bytes(data).file_name("upload");
        self.upload_part(part, "<bytes>", dest).await
    }

    async fn upload_part(
        &self,
        part: reqwest::multipart::Part,
        source: &str,
        dest: &str,
    ) -> Result<FileOperationResult, ClientError> {
        let form = reqwest::multipart::Form::new().part("file", part);
        let req = self
            .request(Method::POST, &format!("{}/file/upload", self.prefix))
            .query(&[("path", dest)])
            .multipart(form);
        let body: Value = Self::send_json(req).await?;
        Ok(FileOperationResult {
            success: body.get("success").and_then(Value::as_bool).unwrap_or(true),
            source_path: source.to_string(),
            destination_path: dest.to_string(),
            file_size: body.get("file_size").and_then(Value::as_u64),
            error: None,
        })
    }

    /// Downloads the remote absolute path `source` to the local file `dest` (parents created),
    /// streaming to a temporary file renamed into place once complete.
    pub async fn file_download(
        &self,
        source: &str,
        dest: &Path,
    ) -> Result<FileOperationResult, ClientError> {
        let io = |e| ClientError::Io {
            path: dest.display().to_string(),
            source: e,
        };
        let req = self
            .request(Method::GET, &format!("{}/file/download", self.prefix))
            .query(&[("path", source)]);
        let resp = Self::send(req).await?;
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        let tmp = dest.with_file_name(format!(
            ".{}.part-{}",
            dest.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            uuid::Uuid::new_v4().simple()
        ));
        let written = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
            let mut stream = resp.bytes_stream();
            let mut n = 0u64;
            while let Some(chunk) = stream.try_next().await? {
                file.write_all(&chunk).await.map_err(io)?;
                n += chunk.len() as u64;
            }
            file.flush().await.map_err(io)?;
            tokio::fs::rename(&tmp, dest).await.map_err(io)?;
            Ok::<u64, ClientError>(n)
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        let n = written?;
        Ok(FileOperationResult {
            success: true,
            source_path: source.to_string(),
            destination_path: dest.display().to_string(),
            file_size: Some(n),
            error: None,
        })
    }

    /// `GET …/git/changes` for `path` (relative paths are joined onto the working directory).
    pub async fn git_changes(&self, path: &str) -> Result<Vec<GitChange>, ClientError> {
        let req = self
            .request(Method::GET, &format!("{}/git/changes", self.prefix))
            .query(&[("path", self.join(path))])
            .timeout(Duration::from_secs(60));
        Self::send_json(req).await
    }

    /// `GET …/git/diff` for `path` (relative paths are joined onto the working directory).
    pub async fn git_diff(&self, path: &str) -> Result<GitDiff, ClientError> {
        let req = self
            .request(Method::GET, &format!("{}/git/diff", self.prefix))
            .query(&[("path", self.join(path))])
            .timeout(Duration::from_secs(60));
        Self::send_json(req).await
    }

    /// Joins a relative path onto the working directory, dropping empty segments.
    fn join(&self, path: &str) -> String {
        let path = path.replace('\\', "/");
        let windows_abs =
            path.len() >= 3 && path.as_bytes()[1] == b':' && path.as_bytes()[2] == b'/';
        if path.starts_with('/') || windows_abs {
            return path;
        }
        let mut out = self.working_dir.trim_end_matches('/').to_string();
        for seg in path.split('/').filter(|s| !s.is_empty() && *s != ".") {
            out.push('/');
            out.push_str(seg);
        }
        out
    }
}

/// Turns a non-2xx answer into [`ClientError::Status`].
pub(crate) async fn check(resp: Response) -> Result<Response, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let url = resp.url().to_string();
    let body = resp.text().await.unwrap_or_default();
    Err(ClientError::Status {
        method: String::new(),
        url,
        status: status.as_u16(),
        body: body.chars().take(2000).collect(),
    })
}

/// `GET {host}/health` without credentials: true iff 2xx within `timeout`.
pub(crate) async fn health_ok(http: &reqwest::Client, host: &str, timeout: Duration) -> bool {
    match http
        .get(format!("{}/health", host.trim_end_matches('/')))
        .timeout(timeout)
        .send()
        .await
    {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    }
}

fn preview(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn relative_git_paths_join_the_working_dir() {
        let mut ws = RemoteWorkspace::new("http://h:1/", None).unwrap();
        ws.set_working_dir("/workspace/project/");
        assert_eq!(ws.host(), "http://h:1");
        assert_eq!(ws.join("a//b/./c"), "/workspace/project/a/b/c");
        assert_eq!(ws.join("/abs/x"), "/abs/x");
        assert_eq!(ws.join("C:\\x\\y"), "C:/x/y");
        assert_eq!(ws.join(""), "/workspace/project");
    }
}
