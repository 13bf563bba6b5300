//! A small bash scanner that finds the top-level statements of a command, so that the terminal
//! can refuse several newline-separated commands in one call (`&&`, `;` and `|` chains, compound
//! commands, quotes, substitutions and heredocs stay one statement). When unsure it reports one
//! statement, like the reference does on a parse error.

#[derive(Debug, PartialEq)]
enum Ctx {
    Paren,
    Brace,
    /// `if`..`fi`, `for|while|until|select`..`done`.
    Keyword(&'static str),
    Case,
}

/// The top-level statements of `src`; a single element when it is one statement or cannot be
/// scanned with confidence.
pub(crate) fn split_commands(src: &str) -> Vec<String> {
    match scan(src) {
        Some(parts) if parts.len() > 1 => parts,
        _ => vec![src.to_owned()],
    }
}

fn scan(src: &str) -> Option<Vec<String>> {
    let s: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut stack: Vec<Ctx> = Vec::new();
    let mut at_cmd_start = true;
    let mut continuation = false;
    let mut heredocs: Vec<(String, bool)> = Vec::new();
    let mut boundaries: Vec<usize> = vec![0];
    while i < s.len() {
        let c = s[i];
        match c {
            ' ' | '\t' => i += 1,
            '\n' => {
                i += 1;
                if !heredocs.is_empty() {
                    for (delim, strip) in std::mem::take(&mut heredocs) {
                        i = skip_heredoc_body(&s, i, &delim, strip)?;
                    }
                    // The reference keeps the statement after a heredoc with it.
                    at_cmd_start = true;
                    continue;
                }
                if stack.is_empty() && !continuation {
                    boundaries.push(i);
                }
                at_cmd_start = true;
            }
            '#' if at_cmd_start || i == 0 || s[i - 1].is_whitespace() => {
                while i < s.len() && s[i] != '\n' {
                    i += 1;
                }
            }
            '\\' => {
                i += 2;
                at_cmd_start = false;
                continuation = false;
            }
            ';' => {
                i += 1;
                if s.get(i) == Some(&';') {
                    i += 1;
                    if s.get(i) == Some(&'&') {
                        i += 1;
                    }
                }
                at_cmd_start = true;
                continuation = false;
            }
            '&' | '|' => {
                let double = s.get(i + 1) == Some(&c);
                i += if double { 2 } else { 1 };
                if c == '|' && s.get(i) == Some(&'&') {
                    i += 1;
                }
                at_cmd_start = true;
                continuation = double || c == '|';
            }
            '(' => {
                stack.push(Ctx::Paren);
                i += 1;
                at_cmd_start = true;
                continuation = false;
            }
            ')' => {
                match stack.last() {
                    Some(Ctx::Paren) => {
                        stack.pop();
                    }
                    Some(Ctx::Case) => {}
                    _ => return None,
                }
                i += 1;
                at_cmd_start = false;
                continuation = false;
            }
            '<' if s.get(i + 1) == Some(&'<') && s.get(i + 2) != Some(&'<') => {
                i += 2;
                let strip = s.get(i) == Some(&'-');
                if strip {
                    i += 1;
                }
                while i < s.len() && (s[i] == ' ' || s[i] == '\t') {
                    i += 1;
                }
                let (word, next) = read_word(&s, i)?;
                let delim: String = word
                    .chars()
                    .filter(|c| !matches!(c, '\'' | '"' | '\\'))
                    .collect();
                if delim.is_empty() {
                    return None;
                }
                heredocs.push((delim, strip));
                i = next;
                at_cmd_start = false;
                continuation = false;
            }
            _ => {
                let (word, next) = read_word(&s, i)?;
                if next == i {
                    // A lone operator character such as `<` or `>`.
                    i += 1;
                    at_cmd_start = false;
                    continuation = false;
                    continue;
                }
                i = next;
                continuation = false;
                if at_cmd_start {
                    match word.as_str() {
                        "if" => stack.push(Ctx::Keyword("fi")),
                        "for" | "while" | "until" | "select" => stack.push(Ctx::Keyword("done")),
                        "case" => {
                            stack.push(Ctx::Case);
                            at_cmd_start = false;
                            continue;
                        }
                        "{" => stack.push(Ctx::Brace),
                        "}" => {
                            if stack.pop() != Some(Ctx::Brace) {
                                return None;
                            }
                        }
                        "fi" | "done" => {
                            if stack.pop()
                                != Some(Ctx::Keyword(if word == "fi" { "fi" } else { "done" }))
                            {
                                return None;
                            }
                        }
                        "esac" => {
                            if stack.pop() != Some(Ctx::Case) {
                                return None;
                            }
                        }
                        "then" | "do" | "else" | "elif" | "!" | "time" => {}
                        _ => {
                            at_cmd_start = false;
                            continue;
                        }
                    }
                    at_cmd_start = !matches!(word.as_str(), "}" | "fi" | "done" | "esac");
                } else if matches!(stack.last(), Some(Ctx::Case)) && word == "esac" {
                    stack.pop();
                }
            }
        }
    }
    if !stack.is_empty() || !heredocs.is_empty() {
        return None;
    }
    boundaries.push(s.len());
    let mut parts: Vec<String> = Vec::new();
    for w in boundaries.windows(2) {
        let piece: String = s[w[0]..w[1]].iter().collect();
        let meaningful = piece
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        match parts.last_mut() {
            Some(last) if !meaningful => last.push_str(&piece),
            _ if !meaningful => parts.push(piece),
            _ => parts.push(piece),
        }
    }
    // A leading comment-only piece belongs to the statement after it.
    if parts.len() > 1 {
        let first_meaningful = parts[0]
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        if !first_meaningful {
            let first = parts.remove(0);
            parts[0] = first + &parts[0];
        }
    }
    Some(parts.into_iter().map(|p| p.trim().to_owned()).collect())
}

/// Reads one shell word starting at `i` (quotes, substitutions and escapes included).
/// Returns the word and the index after it; `None` on an unterminated construct.
fn read_word(s: &[char], mut i: usize) -> Option<(String, usize)> {
    let start = i;
    while i < s.len() {
        match s[i] {
            ' ' | '\t' | '\n' | ';' | '&' | '|' | '(' | ')' | '<' | '>' => {
                // `$(` and `<(`/`>(` are handled below; a bare `(` ends the word.
                break;
            }
            '\\' => i += 2,
            '\'' => i = skip_single(s, i + 1)?,
            '"' => i = skip_double(s, i + 1)?,
            '`' => i = skip_backtick(s, i + 1)?,
            '$' if s.get(i + 1) == Some(&'(') => i = skip_subst(s, i + 2)?,
            '$' if s.get(i + 1) == Some(&'{') => i = skip_braces(s, i + 2)?,
            '$' if s.get(i + 1) == Some(&'\'') => i = skip_ansi(s, i + 2)?,
            _ => i += 1,
        }
    }
    let end = i.min(s.len());
    Some((s[start..end].iter().collect(), end))
}

fn skip_single(s: &[char], mut i: usize) -> Option<usize> {
    while i < s.len() {
        if s[i] == '\'' {
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

fn skip_ansi(s: &[char], mut i: usize) -> Option<usize> {
    while i < s.len() {
        match s[i] {
            '\\' => i += 2,
            '\'' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn skip_double(s: &[char], mut i: usize) -> Option<usize> {
    while i < s.len() {
        match s[i] {
            '\\' => i += 2,
            '"' => return Some(i + 1),
            '`' => i = skip_backtick(s, i + 1)?,
            '$' if s.get(i + 1) == Some(&'(') => i = skip_subst(s, i + 2)?,
            '$' if s.get(i + 1) == Some(&'{') => i = skip_braces(s, i + 2)?,
            _ => i += 1,
        }
    }
    None
}

fn skip_backtick(s: &[char], mut i: usize) -> Option<usize> {
    while i < s.len() {
        match s[i] {
            '\\' => i += 2,
            '`' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn skip_braces(s: &[char], mut i: usize) -> Option<usize> {
    let mut depth = 1;
    while i < s.len() {
        match s[i] {
            '\\' => i += 2,
            '\'' => i = skip_single(s, i + 1)?,
            '"' => i = skip_double(s, i + 1)?,
            '{' => {
                depth += 1;
                i += 1;
            }
            '}' => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// Skips a `$( ... )` body (or `$(( ... ))`), starting after the opening parenthesis.
fn skip_subst(s: &[char], mut i: usize) -> Option<usize> {
    let mut depth = 1;
    while i < s.len() {
        match s[i] {
            '\\' => i += 2,
            '\'' => i = skip_single(s, i + 1)?,
            '"' => i = skip_double(s, i + 1)?,
            '`' => i = skip_backtick(s, i + 1)?,
            '(' => {
                depth += 1;
                i += 1;
            }
            ')' => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// Skips heredoc body lines starting at `i` up to and including the delimiter line.
fn skip_heredoc_body(s: &[char], mut i: usize, delim: &str, strip_tabs: bool) -> Option<usize> {
    while i < s.len() {
        let end = (i..s.len()).find(|&j| s[j] == '\n').unwrap_or(s.len());
        let line: String = s[i..end].iter().collect();
        let line = if strip_tabs {
            line.trim_start_matches('\t').to_owned()
        } else {
            line
        };
        i = (end + 1).min(s.len());
        if line == delim {
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::split_commands;

    #[test]
    fn one_statement_forms() {
        for cmd in [
            "ls -la && echo hi; echo there | wc -l",
            "for i in 1 2 3; do\n  echo $i\ndone",
            "if true; then\n echo a\nelse\n echo b\nfi",
            "cat <<'EOF' > f.txt\nline one\necho not a command\nEOF",
            "echo \"multi\nline string\"",
            "echo 'a\nb'",
            "python -c \"$(printf 'x\\ny')\"",
            "make &&\n  make install",
            "ls \\\n  -la",
            "case $x in\n a) echo a;;\n *) echo b;;\nesac",
            "f() {\n  echo in f\n}",
            "echo done",
            "# comment\nls",
            "(cd /tmp\n ls)",
        ] {
            assert_eq!(split_commands(cmd).len(), 1, "{cmd:?}");
        }
    }

    #[test]
    fn several_statements() {
        assert_eq!(split_commands("ls\npwd"), ["ls", "pwd"]);
        assert_eq!(
            split_commands("echo a\n\n# c\necho b\nsleep 1 &\necho c"),
            ["echo a\n\n# c", "echo b", "sleep 1 &", "echo c"]
        );
        assert_eq!(
            split_commands("for i in 1; do echo $i; done\necho x").len(),
            2
        );
    }

    #[test]
    fn unbalanced_input_is_one_statement() {
        assert_eq!(split_commands("echo 'open\nls").len(), 1);
        assert_eq!(split_commands("fi\nls").len(), 1);
    }
}
