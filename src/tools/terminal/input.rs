//! Checks and encodes what the agent sends: key names (`C-c`, `UP`, ...), a Python/JSON literal
//! passed as a command, the runtime's idle-timeout limit, and secrets quoted for `export`.

pub(super) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Quotes `value` for bash as `$'...'`.
pub(super) fn ansi_c_quote(value: &str) -> String {
    let mut out = String::from("$'");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The bytes of a special key name (`C-c`, `UP`, `TAB`, ...), if `cmd` is one.
pub(super) fn key_bytes(cmd: &str) -> Option<Vec<u8>> {
    let upper = cmd.trim().to_ascii_uppercase();
    let named: &[u8] = match upper.as_str() {
        "ENTER" => b"\n",
        "TAB" => b"\t",
        "BS" => b"\x7f",
        "ESC" => b"\x1b",
        "UP" => b"\x1b[A",
        "DOWN" => b"\x1b[B",
        "RIGHT" => b"\x1b[C",
        "LEFT" => b"\x1b[D",
        "HOME" => b"\x1b[H",
        "END" => b"\x1b[F",
        "PGUP" => b"\x1b[5~",
        "PGDN" => b"\x1b[6~",
        _ => {
            let letter = ctrl_letter(cmd)?;
            return Some(vec![(letter as u8) & 0x1f]);
        }
    };
    Some(named.to_vec())
}

/// `C` for `C-c`: the letter of a `C-<letter>` key.
pub(super) fn ctrl_letter(cmd: &str) -> Option<char> {
    let t = cmd.trim();
    let rest = t.strip_prefix("C-").or_else(|| t.strip_prefix("c-"))?;
    let mut chars = rest.chars();
    let c = chars.next()?;
    (chars.next().is_none() && c.is_ascii_alphabetic()).then(|| c.to_ascii_uppercase())
}

/// Detects a Python/JSON literal passed as the command (`[{...}]`, `{"k": ...}`).
pub(super) fn literal_kind(command: &str) -> Option<&'static str> {
    let s: Vec<char> = command.trim_start().chars().take(3).collect();
    if s.len() < 2 {
        return None;
    }
    match (s[0], s[1]) {
        ('[', '{' | '"' | '\'') => Some("list literal"),
        ('[', '[') => match s.get(2) {
            Some(' ' | '\t') | None => None,
            Some(_) => Some("nested list literal"),
        },
        ('{', '"' | '\'') => Some("dict literal"),
        _ => None,
    }
}

/// The runtime's idle timeout in seconds as bits of an `f64`; 0: none.
static RUNTIME_IDLE_TIMEOUT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sets the runtime's idle timeout (`Config::runtime_idle_timeout_secs`): foreground commands
/// with timeouts above 90 % of it are refused. Applies to every terminal from then on.
pub fn set_runtime_idle_timeout(secs: Option<f64>) {
    let bits = secs.filter(|s| *s > 0.0).map_or(0, f64::to_bits);
    RUNTIME_IDLE_TIMEOUT.store(bits, std::sync::atomic::Ordering::Relaxed);
}

/// With a runtime idle timeout set, foreground timeouts above 90 % of it are refused.
pub(super) fn idle_timeout_rejection(
    command: &str,
    is_input: bool,
    timeout: Option<f64>,
) -> Option<String> {
    let timeout = timeout?;
    if is_input || command.is_empty() {
        return None;
    }
    let idle = f64::from_bits(RUNTIME_IDLE_TIMEOUT.load(std::sync::atomic::Ordering::Relaxed));
    if idle <= 0.0 {
        return None;
    }
    let max = idle * 0.9;
    if timeout <= max {
        return None;
    }
    Some(format!(
        "Refusing to run a foreground command with timeout={timeout}s.\n\nThis runtime is \
         cleaned up after {idle}s without activity, so foreground commands are limited to 90% of \
         that ({max}s). Use a shorter timeout, leave it out and poll with empty commands, or run \
         the work in the background and check its log file."
    ))
}
