//! Turns the terminal's raw bytes into command output and prompt records: UTF-8 split across
//! reads, escape sequences removed, carriage returns and backspaces applied line by line, and
//! the session's marked prompts (exit code, working directory as JSON) cut out and parsed.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::Value;

use super::capture::{Capture, Captured};

/// A marker start with no end after this many bytes is ordinary output.
const MAX_PENDING_MARKER: usize = 16_384;

/// What the prompt reported after a command.
#[derive(Debug, Clone, Default)]
pub(super) struct PromptInfo {
    pub exit_code: i64,
    pub pid: i64,
    pub username: Option<String>,
    pub hostname: Option<String>,
    pub working_dir: Option<String>,
    pub py_interpreter_path: Option<String>,
}

/// Removes terminal escape sequences (colours, cursor moves, titles) from the output stream;
/// a sequence split across reads is handled.
#[derive(Default)]
struct AnsiFilter {
    state: AnsiState,
    len: usize,
}

#[derive(Default, PartialEq)]
enum AnsiState {
    #[default]
    Normal,
    Esc,
    Csi,
    Osc,
    OscEsc,
    Skip1,
}

impl AnsiFilter {
    fn filter(&mut self, s: &str) -> String {
        if self.state == AnsiState::Normal && !s.contains('\x1b') {
            return s.to_owned();
        }
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            if self.state != AnsiState::Normal {
                self.len += 1;
                // A runaway sequence (binary garbage) ends here rather than eating the output.
                if self.len > 4096 {
                    self.state = AnsiState::Normal;
                }
            }
            self.state = match self.state {
                AnsiState::Normal => {
                    if c == '\x1b' {
                        self.len = 0;
                        AnsiState::Esc
                    } else {
                        out.push(c);
                        AnsiState::Normal
                    }
                }
                AnsiState::Esc => match c {
                    '[' => AnsiState::Csi,
                    ']' | 'P' | '_' | '^' | 'X' => AnsiState::Osc,
                    '(' | ')' | '*' | '+' | '#' | '%' => AnsiState::Skip1,
                    _ => AnsiState::Normal,
                },
                AnsiState::Csi => {
                    if ('\x40'..='\x7e').contains(&c) {
                        AnsiState::Normal
                    } else {
                        AnsiState::Csi
                    }
                }
                AnsiState::Osc => match c {
                    '\x07' => AnsiState::Normal,
                    '\x1b' => AnsiState::OscEsc,
                    _ => AnsiState::Osc,
                },
                AnsiState::OscEsc => {
                    if c == '\\' {
                        AnsiState::Normal
                    } else {
                        AnsiState::Osc
                    }
                }
                AnsiState::Skip1 => AnsiState::Normal,
            };
        }
        out
    }
}

/// Assembles output lines the way a terminal shows them: a carriage return starts the line
/// over (progress bars), backspace erases, other control characters are dropped.
#[derive(Default)]
struct LineBuffer {
    line: String,
    cr: bool,
}

/// An unfinished line longer than this is passed on as is.
const MAX_LINE: usize = 64 * 1024;

impl LineBuffer {
    fn emit(&mut self, text: &str, capture: &mut Capture) {
        let plain = !self.cr
            && !text
                .bytes()
                .any(|b| (b < 0x20 && b != b'\n' && b != b'\t') || b == 0x7f);
        if plain {
            match text.rfind('\n') {
                Some(i) => {
                    if self.line.is_empty() {
                        capture.push(&text[..=i]);
                    } else {
                        self.line.push_str(&text[..=i]);
                        capture.push(&self.line);
                        self.line.clear();
                    }
                    self.line.push_str(&text[i + 1..]);
                }
                None => self.line.push_str(text),
            }
            if self.line.len() > MAX_LINE {
                capture.push(&self.line);
                self.line.clear();
            }
            return;
        }
        for c in text.chars() {
            if self.cr {
                self.cr = false;
                if c != '\n' {
                    self.line.clear();
                }
            }
            match c {
                '\n' => {
                    self.line.push('\n');
                    capture.push(&self.line);
                    self.line.clear();
                }
                '\r' => self.cr = true,
                '\x08' => {
                    self.line.pop();
                }
                '\t' => self.line.push(c),
                c if (c as u32) < 0x20 || c == '\x7f' => {}
                c => self.line.push(c),
            }
            if self.line.len() > MAX_LINE {
                capture.push(&self.line);
                self.line.clear();
            }
        }
    }

    fn flush(&mut self, capture: &mut Capture) {
        capture.push(&self.line);
        self.line.clear();
    }
}

/// State shared between the reader thread and the session.
pub(super) struct Shared {
    begin: String,
    end: String,
    utf8_rest: Vec<u8>,
    ansi: AnsiFilter,
    line: LineBuffer,
    pending: String,
    skip_newline: bool,
    capture: Capture,
    pub(super) prompts: u64,
    pub(super) last_prompt: PromptInfo,
    pub(super) last_output: Instant,
    pub(super) eof: bool,
}

impl Shared {
    /// The state of a fresh session whose prompts carry `token`.
    pub(super) fn new(token: &str, spool_dir: PathBuf) -> Self {
        Shared {
            begin: format!("###OH-{token}-BEGIN###"),
            end: format!("###OH-{token}-END###"),
            utf8_rest: Vec::new(),
            ansi: AnsiFilter::default(),
            line: LineBuffer::default(),
            pending: String::new(),
            skip_newline: false,
            capture: Capture::new(spool_dir),
            prompts: 0,
            last_prompt: PromptInfo::default(),
            last_output: Instant::now(),
            eof: false,
        }
    }

    pub(super) fn feed(&mut self, bytes: &[u8]) {
        self.last_output = Instant::now();
        let mut buf = std::mem::take(&mut self.utf8_rest);
        buf.extend_from_slice(bytes);
        let valid_up_to = match std::str::from_utf8(&buf) {
            Ok(_) => buf.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => buf.len(),
        };
        self.utf8_rest = buf[valid_up_to..].to_vec();
        let mut text = String::from_utf8_lossy(&buf[..valid_up_to]).into_owned();
        // Keep a trailing CR until we know whether an LF follows.
        if text.ends_with('\r') {
            text.pop();
            let mut rest = b"\r".to_vec();
            rest.extend_from_slice(&self.utf8_rest);
            self.utf8_rest = rest;
        }
        let text = text.replace("\r\n", "\n");
        let text = self.ansi.filter(&text);
        self.pending.push_str(&text);
        self.process();
    }

    /// Takes the output so far, including an unfinished last line.
    pub(super) fn take(&mut self) -> Captured {
        self.line.flush(&mut self.capture);
        self.capture.take()
    }

    fn process(&mut self) {
        loop {
            if self.skip_newline && !self.pending.is_empty() {
                if self.pending.starts_with('\n') {
                    self.pending.remove(0);
                }
                self.skip_newline = false;
            }
            match self.pending.find(&self.begin) {
                Some(i) => {
                    let after = i + self.begin.len();
                    let out_end = if self.pending[..i].ends_with('\n') {
                        i - 1
                    } else {
                        i
                    };
                    match self.pending[after..].find(&self.end) {
                        Some(j) => {
                            let out = self.pending[..out_end].to_owned();
                            self.line.emit(&out, &mut self.capture);
                            self.line.flush(&mut self.capture);
                            self.last_prompt = parse_prompt(&self.pending[after..after + j]);
                            self.prompts += 1;
                            self.pending.drain(..after + j + self.end.len());
                            self.skip_newline = true;
                        }
                        None => {
                            if self.pending.len() - i > MAX_PENDING_MARKER {
                                let all = std::mem::take(&mut self.pending);
                                self.line.emit(&all, &mut self.capture);
                            } else {
                                let out: String = self.pending.drain(..out_end).collect();
                                self.line.emit(&out, &mut self.capture);
                            }
                            return;
                        }
                    }
                }
                None => {
                    let hold = held_back(&self.pending, &self.begin);
                    let emit = self.pending.len() - hold;
                    let out: String = self.pending.drain(..emit).collect();
                    self.line.emit(&out, &mut self.capture);
                    return;
                }
            }
        }
    }
}

/// Length of the longest suffix of `text` that could start `"\n" + begin`.
fn held_back(text: &str, begin: &str) -> usize {
    let full = format!("\n{begin}");
    let max = full.len().min(text.len());
    (1..=max)
        .rev()
        .find(|&k| {
            text.is_char_boundary(text.len() - k) && full.starts_with(&text[text.len() - k..])
        })
        .unwrap_or(0)
}

fn parse_prompt(json: &str) -> PromptInfo {
    let v: Value = serde_json::from_str(json.trim()).unwrap_or(Value::Null);
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    PromptInfo {
        exit_code: v.get("exit_code").and_then(Value::as_i64).unwrap_or(-1),
        pid: v.get("pid").and_then(Value::as_i64).unwrap_or(-1),
        username: s("username"),
        hostname: s("hostname"),
        working_dir: s("working_dir"),
        py_interpreter_path: s("py_interpreter_path"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            begin: "###OH-t-BEGIN###".into(),
            end: "###OH-t-END###".into(),
            utf8_rest: Vec::new(),
            ansi: AnsiFilter::default(),
            line: LineBuffer::default(),
            pending: String::new(),
            skip_newline: false,
            capture: Capture::new(std::env::temp_dir()),
            prompts: 0,
            last_prompt: PromptInfo::default(),
            last_output: Instant::now(),
            eof: false,
        }
    }

    #[test]
    fn markers_split_across_reads_are_found() {
        let mut sh = shared();
        let stream = "hello\r\nworld\r\n\n###OH-t-BEGIN###{\"exit_code\":3,\"pid\":-1,\"working_dir\":\"/x\"}###OH-t-END###\nnext";
        for chunk in stream.as_bytes().chunks(5) {
            sh.feed(chunk);
        }
        assert_eq!(sh.prompts, 1);
        assert_eq!(sh.last_prompt.exit_code, 3);
        assert_eq!(sh.last_prompt.working_dir.as_deref(), Some("/x"));
        let c = sh.take();
        assert_eq!(c.whole.as_deref(), Some("hello\nworld\nnext"));
    }

    #[test]
    fn escapes_progress_bars_and_backspaces_are_rendered() {
        let mut sh = shared();
        for chunk in [
            &b"\x1b[01;34mblue\x1b[0m plain\r\n"[..],
            b"\x1b]0;title\x07ok\x1b[",
            b"2Kdone\r\n10%\r50%\r",
            b"100%\r\nab\x08c\x07\n",
        ] {
            sh.feed(chunk);
        }
        assert_eq!(
            sh.take().whole.as_deref(),
            Some("blue plain\nokdone\n100%\nac")
        );
    }

    #[test]
    fn split_utf8_is_decoded() {
        let mut sh = shared();
        let bytes = "héllo wörld".as_bytes();
        for chunk in bytes.chunks(1) {
            sh.feed(chunk);
        }
        sh.feed(b"\n");
        sh.feed(b"x");
        assert_eq!(sh.take().whole.as_deref(), Some("héllo wörld\nx"));
    }
}
