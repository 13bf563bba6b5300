//! A command's output in bounded memory: the whole text while small, else the first and last
//! characters kept and everything spooled to a file that becomes the saved full output.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use rand::Rng;

/// Characters of output kept at the start of a command's output.
const HEAD_CAP: usize = 32_000;
/// Characters of output kept at the end of a command's output (trimmed when it doubles).
const TAIL_CAP: usize = 32_000;

/// Output collected since the last reset: the whole text while small, else head, tail and a
/// spool file holding everything.
#[derive(Default)]
pub(super) struct Capture {
    head: String,
    head_chars: usize,
    tail: String,
    total_chars: usize,
    spool: Option<Spool>,
    spool_failed: bool,
    spool_dir: PathBuf,
}

struct Spool {
    keep: bool,
    file: std::io::BufWriter<File>,
    path: PathBuf,
    /// Random id naming the saved file.
    id: String,
}

/// A finished capture.
pub(super) struct Captured {
    /// The whole output when it was small enough to keep, else `None`.
    pub whole: Option<String>,
    pub head: String,
    pub tail: String,
    /// The spool file with the whole output and a random id for its final name, when output
    /// was large.
    pub spooled: Option<(PathBuf, String)>,
}

impl Capture {
    pub(super) fn new(spool_dir: PathBuf) -> Self {
        Capture {
            spool_dir,
            ..Capture::default()
        }
    }

    pub(super) fn push(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        let n = text.chars().count();
        self.total_chars += n;
        if self.spool.is_none() && self.head_chars + n <= HEAD_CAP {
            self.head.push_str(text);
            self.head_chars += n;
            return;
        }
        if self.spool.is_none() && !self.spool_failed {
            self.open_spool();
        }
        if let Some(spool) = &mut self.spool {
            if spool.file.write_all(text.as_bytes()).is_err() {
                self.spool_failed = true;
            }
        }
        let room = HEAD_CAP.saturating_sub(self.head_chars);
        let rest = if room > 0 {
            let cut = super::super::truncate::byte_index(text, room);
            self.head.push_str(&text[..cut]);
            self.head_chars = HEAD_CAP;
            &text[cut..]
        } else {
            text
        };
        self.tail.push_str(rest);
        if self.tail.len() > 4 * TAIL_CAP {
            let chars = self.tail.chars().count();
            if chars > 2 * TAIL_CAP {
                let cut = super::super::truncate::byte_index(&self.tail, chars - TAIL_CAP);
                self.tail.drain(..cut);
            }
        }
    }

    fn open_spool(&mut self) {
        let name = format!(".terminal_spool_{:016x}.part", rand::rng().random::<u64>());
        let path = self.spool_dir.join(name);
        let opened = std::fs::create_dir_all(&self.spool_dir).and_then(|_| File::create(&path));
        match opened {
            Ok(mut file) => {
                if file.write_all(self.head.as_bytes()).is_err() {
                    self.spool_failed = true;
                    let _ = std::fs::remove_file(&path);
                    return;
                }
                self.spool = Some(Spool {
                    keep: false,
                    file: std::io::BufWriter::with_capacity(256 * 1024, file),
                    path,
                    id: format!("{:08x}", rand::rng().random::<u32>()),
                });
            }
            Err(_) => self.spool_failed = true,
        }
    }

    /// Takes the collected output, leaving an empty capture.
    pub(super) fn take(&mut self) -> Captured {
        let spool_dir = std::mem::take(&mut self.spool_dir);
        let old = std::mem::replace(self, Capture::new(spool_dir));
        let mut old = old;
        let spool = old.spool.take();
        let big = old.total_chars > old.head_chars;
        let spooled = spool.and_then(|mut s| {
            if s.file.flush().is_err() {
                return None;
            }
            s.keep = true;
            Some((s.path.clone(), s.id.clone()))
        });
        if big {
            let chars = old.tail.chars().count();
            if chars > TAIL_CAP {
                let cut = super::super::truncate::byte_index(&old.tail, chars - TAIL_CAP);
                old.tail.drain(..cut);
            }
            Captured {
                whole: None,
                head: old.head,
                tail: old.tail,
                spooled,
            }
        } else {
            Captured {
                whole: Some(old.head),
                head: String::new(),
                tail: String::new(),
                spooled,
            }
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_output_spools_and_keeps_both_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Capture::new(dir.path().to_path_buf());
        let mut all = String::new();
        for i in 0..50_000 {
            let line = format!("line-{i}\n");
            all.push_str(&line);
            c.push(&line);
        }
        let got = c.take();
        assert!(got.whole.is_none());
        assert!(got.head.starts_with("line-0\n"));
        assert!(got.tail.ends_with("line-49999\n"));
        let (path, _) = got.spooled.expect("spooled");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), all);
    }
}
