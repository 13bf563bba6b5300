//! The `TerminalObservation` of one call: the output (whole, or head and tail with the
//! complete text saved under `observations/`), secrets masked, and the metadata whose prefix
//! and suffix frame the output in the LLM text.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::capture::Captured;
use super::output::PromptInfo;
use super::{TerminalTool, MAX_OUTPUT_CHARS};
use crate::tools::{llm_text, text_content, truncate, ToolOutput, ERROR_MESSAGE_HEADER};

/// `CmdOutputMetadata`.
#[derive(Debug, Clone)]
pub(super) struct Metadata {
    pub(super) exit_code: i64,
    pub(super) pid: i64,
    pub(super) username: Option<String>,
    pub(super) hostname: Option<String>,
    pub(super) working_dir: Option<String>,
    pub(super) py_interpreter_path: Option<String>,
    pub(super) prefix: String,
    pub(super) suffix: String,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            exit_code: -1,
            pid: -1,
            username: None,
            hostname: None,
            working_dir: None,
            py_interpreter_path: None,
            prefix: String::new(),
            suffix: String::new(),
        }
    }
}

impl Metadata {
    pub(super) fn from_prompt(p: &PromptInfo) -> Self {
        Metadata {
            exit_code: p.exit_code,
            pid: p.pid,
            username: p.username.clone(),
            hostname: p.hostname.clone(),
            working_dir: p.working_dir.clone(),
            py_interpreter_path: p.py_interpreter_path.clone(),
            ..Metadata::default()
        }
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("exit_code".into(), json!(self.exit_code));
        m.insert("pid".into(), json!(self.pid));
        for (k, v) in [
            ("username", &self.username),
            ("hostname", &self.hostname),
            ("working_dir", &self.working_dir),
            ("py_interpreter_path", &self.py_interpreter_path),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
        m.insert("prefix".into(), json!(self.prefix));
        m.insert("suffix".into(), json!(self.suffix));
        Value::Object(m)
    }

    /// The metadata of a `TerminalObservation` as stored (missing fields take their defaults).
    fn from_json(m: &Value) -> Self {
        let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
        let i = |k: &str| m.get(k).and_then(Value::as_i64).unwrap_or(-1);
        Metadata {
            exit_code: i("exit_code"),
            pid: i("pid"),
            username: s("username"),
            hostname: s("hostname"),
            working_dir: s("working_dir"),
            py_interpreter_path: s("py_interpreter_path"),
            prefix: s("prefix").unwrap_or_default(),
            suffix: s("suffix").unwrap_or_default(),
        }
    }

    /// What follows the output in the LLM text.
    fn trailer(&self) -> String {
        let mut t = self.suffix.clone();
        if let Some(wd) = self.working_dir.as_deref().filter(|s| !s.is_empty()) {
            t.push_str(&format!("\n[Current working directory: {wd}]"));
        }
        if let Some(py) = self
            .py_interpreter_path
            .as_deref()
            .filter(|s| !s.is_empty())
        {
            t.push_str(&format!("\n[Python interpreter: {py}]"));
        }
        if self.exit_code != -1 {
            t.push_str(&format!(
                "\n[Command finished with exit code {}]",
                self.exit_code
            ));
        }
        t
    }
}

/// The LLM text of a stored `TerminalObservation` whose content reads `text`: the metadata's
/// prefix, the output, then the suffix, working directory, interpreter and exit code.
pub(in crate::tools) fn llm_text_of(obs: &Value, text: &str, is_error: bool) -> String {
    let meta = Metadata::from_json(obs.get("metadata").unwrap_or(&Value::Null));
    llm_text(
        &format!("{}{}{}", meta.prefix, text, meta.trailer()),
        is_error,
    )
}

/// Text of one observation before it is assembled.
pub(super) enum Body {
    Text(String),
    Output(Captured),
}

impl TerminalTool {
    /// Builds a `TerminalObservation` and its LLM text.
    pub(super) async fn observe(
        &self,
        command: Option<&str>,
        body: Body,
        meta: Metadata,
        exit_code: Option<i64>,
        is_error: bool,
    ) -> ToolOutput {
        let trailer = meta.trailer();
        let header = if is_error {
            ERROR_MESSAGE_HEADER.len()
        } else {
            0
        };
        let budget = MAX_OUTPUT_CHARS
            .saturating_sub(meta.prefix.chars().count() + trailer.chars().count() + header)
            .max(2_000);
        let text = match body {
            Body::Text(t) => t,
            Body::Output(c) => self.mask(&self.render_output(c, budget).await),
        };
        let mut obs = Map::new();
        obs.insert("content".into(), json!([text_content(text.clone())]));
        obs.insert("is_error".into(), json!(is_error));
        if let Some(c) = command {
            obs.insert("command".into(), json!(c));
        }
        if let Some(e) = exit_code {
            obs.insert("exit_code".into(), json!(e));
        }
        obs.insert("timeout".into(), json!(false));
        obs.insert("metadata".into(), meta.to_json());
        obs.insert(
            "full_output_save_dir".into(),
            json!(self.opts.save_dir().to_string_lossy()),
        );
        obs.insert("kind".into(), json!("TerminalObservation"));
        ToolOutput {
            observation: Value::Object(obs),
        }
    }

    /// The command output as shown: whole when it fits, else head + notice + tail with the
    /// complete output saved under `observations/`.
    async fn render_output(&self, c: Captured, budget: usize) -> String {
        let save_dir = self.opts.save_dir();
        if let Some(whole) = c.whole {
            let text = whole.trim_start_matches('\n').trim_end().to_owned();
            if let Some((p, _)) = &c.spooled {
                let _ = tokio::fs::remove_file(p).await;
            }
            if text.chars().count() <= budget {
                return text;
            }
            let hash = short_hash(&text);
            let path = save_dir.join(format!("terminal_output_{hash}.txt"));
            let saved = match tokio::fs::create_dir_all(&save_dir).await {
                Ok(()) => tokio::fs::write(&path, &text).await.is_ok(),
                Err(_) => false,
            };
            return cut_middle(
                text.trim_start_matches('\n'),
                "",
                budget,
                saved.then_some(path.as_path()),
            );
        }
        let head = c.head.trim_start_matches('\n').to_owned();
        let tail = c.tail.trim_end().to_owned();
        let saved = match c.spooled {
            Some((spool, hash)) => {
                let path = save_dir.join(format!("terminal_output_{hash}.txt"));
                match tokio::fs::rename(&spool, &path).await {
                    Ok(()) => Some(path),
                    Err(_) => {
                        let _ = tokio::fs::remove_file(&spool).await;
                        None
                    }
                }
            }
            None => None,
        };
        cut_middle(&head, &tail, budget, saved.as_deref())
    }

    /// Replaces every secret value in `text` with `<secret-hidden>`.
    fn mask(&self, text: &str) -> String {
        let secrets = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        let mut out = text.to_owned();
        for (_, value) in secrets.iter() {
            if !value.is_empty() && out.contains(value.as_str()) {
                out = out.replace(value.as_str(), "<secret-hidden>");
            }
        }
        out
    }
}

/// `Python`-style seconds: `30` for whole numbers, else the float.
pub(super) fn secs_text(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s}")
    }
}

/// Middle-truncates `head + tail` to `budget` characters with a notice naming the saved file.
fn cut_middle(head: &str, tail: &str, budget: usize, saved: Option<&Path>) -> String {
    let head_part = |n: usize| -> &str { &head[..truncate::byte_index(head, n)] };
    let text_lines = |s: &str| s.lines().count();
    let build_notice = |line: usize| match saved {
        Some(p) => format!(
            "<response clipped><NOTE>The output was too long, so its middle part is not shown. \
             The complete output is saved in {} - read it with other tools if you need it (the \
             omitted part starts around line {line}).</NOTE>",
            p.display()
        ),
        None => truncate::CLIPPED_NOTICE.to_owned(),
    };
    let (source_head, source_tail) = if tail.is_empty() {
        (head, "")
    } else {
        (head, tail)
    };
    let total_tail_chars = source_tail.chars().count();
    let provisional = build_notice(0).chars().count() + 12;
    let available = budget.saturating_sub(provisional);
    let want_head = available.div_ceil(2);
    let head_chars = want_head.min(source_head.chars().count());
    let notice = build_notice(text_lines(head_part(head_chars)) + 1);
    let remaining = budget.saturating_sub(notice.chars().count() + head_chars);
    let (head_text, tail_text) = if source_tail.is_empty() {
        // One text: take the tail from its end.
        let all = source_head;
        let n = all.chars().count();
        let t = remaining.min(n.saturating_sub(head_chars));
        let start = truncate::byte_index(all, n - t);
        (head_part(head_chars), &all[start..])
    } else {
        let t = remaining.min(total_tail_chars);
        let start = truncate::byte_index(source_tail, total_tail_chars - t);
        (head_part(head_chars), &source_tail[start..])
    };
    format!("{head_text}{notice}{tail_text}")
}

fn short_hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(text.as_bytes());
    d.iter().take(4).map(|b| format!("{b:02x}")).collect()
}
