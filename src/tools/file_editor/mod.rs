//! The `file_editor` tool: view files and directories, create files, replace a unique string,
//! insert lines, and undo edits, with the reference's messages and observation fields.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};

use super::args::Validator;
use super::truncate::maybe_truncate;
use super::{definition, text_content, Tool, ToolContext, ToolError, ToolOutput};
use crate::llm::ToolDefinition;

const COMMANDS: &[&str] = &["view", "create", "str_replace", "insert", "undo_edit"];
const MAX_RESPONSE_CHARS: usize = 16_000;
const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;
const SNIPPET_CONTEXT: usize = 4;
const MAX_HISTORY: usize = 10;
/// Bytes of undo history kept for all files together.
const MAX_HISTORY_BYTES: usize = 64 * 1024 * 1024;
const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "gif", "webp", "bmp"];
const FILE_CLIPPED: &str = "<response clipped><NOTE>Only part of this file is shown because \
the output limit was reached. Search the file with `grep -n` to find the lines you need, then \
view them with `view_range`.</NOTE>";
const DIR_CLIPPED: &str = "<response clipped><NOTE>Only part of this directory is shown because \
the output limit was reached. List large directories step by step with `ls -la`.</NOTE>";

/// The `file_editor` tool.
pub struct FileEditorTool {
    cwd: PathBuf,
    /// Earlier contents per file, newest last (at most [`MAX_HISTORY`] each).
    history: Arc<Mutex<HashMap<PathBuf, Vec<String>>>>,
}

/// A validated `FileEditorAction`.
#[derive(Debug, Clone)]
struct Action {
    command: String,
    path: String,
    file_text: Option<String>,
    old_str: Option<String>,
    new_str: Option<String>,
    insert_line: Option<i64>,
    view_range: Option<Vec<i64>>,
}

/// A successful result.
struct Done {
    text: String,
    path: String,
    prev_exist: bool,
    old_content: Option<String>,
    new_content: Option<String>,
    image_url: Option<String>,
}

impl Done {
    fn text(text: String, path: &Path) -> Self {
        Done {
            text,
            path: path.to_string_lossy().into_owned(),
            prev_exist: true,
            old_content: None,
            new_content: None,
            image_url: None,
        }
    }
}

impl FileEditorTool {
    /// An editor whose relative-path hints point into `working_dir`.
    pub fn new(working_dir: &Path) -> Self {
        FileEditorTool {
            cwd: working_dir.to_path_buf(),
            history: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

#[async_trait::async_trait]
impl Tool for FileEditorTool {
    fn name(&self) -> &'static str {
        "file_editor"
    }

    fn kind(&self) -> &'static str {
        "FileEditorTool"
    }

    fn definition(&self) -> ToolDefinition {
        let description = format!(
            "View, create and edit files.\n\
             * State is kept between calls, so `undo_edit` can revert earlier edits.\n\
             * `view` on a file prints it with line numbers (like `cat -n`); on a directory it \
             lists files and folders two levels deep, without hidden entries.\n\
             * `create` writes a new file and refuses a path that already exists.\n\
             * Long results are cut in the middle and marked with `<response clipped>`.\n\
             * `undo_edit` restores the file as it was before the last edit.\n\n\
             Rules for `str_replace`:\n\
             * `old_str` must match one or more complete lines of the file exactly, whitespace \
             included.\n\
             * It must occur exactly once; include enough surrounding lines to make it unique, \
             otherwise nothing is replaced.\n\
             * `new_str` holds the lines that take its place.\n\n\
             Always use absolute paths. Before editing, look at the file; after editing, check \
             the result. Make several small edits to one file in sequence rather than one big \
             one.\n\n\
             Your current working directory is: {}\n\
             Start exploring the project from this directory rather than from the filesystem root.",
            self.cwd.display()
        );
        definition(
            "file_editor",
            description,
            json!({
                "command": {"type": "string", "description": "What to do: `view`, `create`, `str_replace`, `insert` or `undo_edit`.", "enum": COMMANDS},
                "path": {"type": "string", "description": "Absolute path of the file or directory."},
                "file_text": {"type": "string", "description": "For `create` (required): the content of the new file."},
                "old_str": {"type": "string", "description": "For `str_replace` (required): the exact text in the file to replace."},
                "new_str": {"type": "string", "description": "For `str_replace`: the replacement text (empty to delete `old_str`). For `insert` (required): the text to insert."},
                "insert_line": {"type": "integer", "description": "For `insert` (required): `new_str` goes AFTER this line number (0 inserts at the top)."},
                "view_range": {"type": "array", "items": {"type": "integer"}, "description": "For `view` of a file (optional): the 1-based line range to show, e.g. [11, 12] for lines 11 and 12; [start, -1] shows everything from `start` to the end."}
            }),
            &["command", "path"],
        )
    }

    fn read_only(&self) -> bool {
        false
    }

    fn annotations(&self) -> Value {
        json!({"title": "file_editor", "readOnlyHint": false, "destructiveHint": true,
               "idempotentHint": false, "openWorldHint": false})
    }

    fn parse_action(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let mut v = Validator::new("FileEditorAction", args);
        let command = v.literal("command", COMMANDS, None);
        let path = v.string("path", true);
        let file_text = v.string("file_text", false);
        let old_str = v.string("old_str", false);
        let new_str = v.string("new_str", false);
        let insert_line = v.integer("insert_line", Some(0));
        let view_range = v.int_list("view_range");
        v.finish()?;
        let mut a = Map::new();
        a.insert("command".into(), json!(command.unwrap_or_default()));
        a.insert("path".into(), json!(path.unwrap_or_default()));
        if let Some(t) = file_text {
            a.insert("file_text".into(), json!(t));
        }
        if let Some(t) = old_str {
            a.insert("old_str".into(), json!(t));
        }
        if let Some(t) = new_str {
            a.insert("new_str".into(), json!(t));
        }
        if let Some(n) = insert_line {
            a.insert("insert_line".into(), json!(n));
        }
        if let Some(r) = view_range {
            a.insert("view_range".into(), json!(r));
        }
        a.insert("kind".into(), json!("FileEditorAction"));
        Ok(Value::Object(a))
    }

    async fn execute(&self, action: &Value, _ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let s = |k: &str| action.get(k).and_then(Value::as_str).map(str::to_owned);
        let a = Action {
            command: s("command").unwrap_or_default(),
            path: s("path").unwrap_or_default(),
            file_text: s("file_text"),
            old_str: s("old_str"),
            new_str: s("new_str"),
            insert_line: action.get("insert_line").and_then(Value::as_i64),
            view_range: action
                .get("view_range")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_i64).collect()),
        };
        let cwd = self.cwd.clone();
        let history = self.history.clone();
        let command = a.command.clone();
        let result = tokio::task::spawn_blocking(move || run(&a, &cwd, &history))
            .await
            .map_err(|e| ToolError(format!("file_editor failed: {e}")))?;
        Ok(observation(&command, result))
    }
}

fn observation(command: &str, result: Result<Done, String>) -> ToolOutput {
    let mut obs = Map::new();
    match result {
        Ok(done) => {
            let mut content = vec![text_content(done.text.clone())];
            if let Some(url) = &done.image_url {
                content.push(json!({"cache_prompt": false, "type": "image", "image_urls": [url]}));
            }
            obs.insert("content".into(), json!(content));
            obs.insert("is_error".into(), json!(false));
            obs.insert("command".into(), json!(command));
            obs.insert("path".into(), json!(done.path));
            obs.insert("prev_exist".into(), json!(done.prev_exist));
            if let Some(o) = done.old_content {
                obs.insert("old_content".into(), json!(o));
            }
            if let Some(n) = done.new_content {
                obs.insert("new_content".into(), json!(n));
            }
            obs.insert("kind".into(), json!("FileEditorObservation"));
            ToolOutput {
                observation: Value::Object(obs),
            }
        }
        Err(msg) => {
            obs.insert("content".into(), json!([text_content(msg.clone())]));
            obs.insert("is_error".into(), json!(true));
            obs.insert("command".into(), json!(command));
            obs.insert("prev_exist".into(), json!(true));
            obs.insert("kind".into(), json!("FileEditorObservation"));
            ToolOutput {
                observation: Value::Object(obs),
            }
        }
    }
}

fn invalid(param: &str, value: &str, hint: &str) -> String {
    format!("Invalid `{param}` parameter: {value}. {hint}")
}

fn missing(param: &str, command: &str) -> String {
    format!("Parameter `{param}` is required for command: {command}.")
}

fn run(
    a: &Action,
    cwd: &Path,
    history: &Mutex<HashMap<PathBuf, Vec<String>>>,
) -> Result<Done, String> {
    let path = PathBuf::from(&a.path);
    validate_path(&a.command, &path, &a.path, cwd)?;
    match a.command.as_str() {
        "view" => view(&path, a.view_range.as_deref()),
        "create" => {
            let text = a
                .file_text
                .as_ref()
                .ok_or_else(|| missing("file_text", "create"))?;
            write_file(&path, text, None)?;
            push_history(history, &path, text.clone());
            Ok(Done {
                text: format!("File created successfully at: {}", path.display()),
                path: a.path.clone(),
                prev_exist: false,
                old_content: None,
                new_content: Some(text.clone()),
                image_url: None,
            })
        }
        "str_replace" => {
            let old = a
                .old_str
                .as_ref()
                .ok_or_else(|| missing("old_str", "str_replace"))?;
            let new = a
                .new_str
                .as_ref()
                .ok_or_else(|| missing("new_str", "str_replace"))?;
            if old == new {
                return Err(invalid(
                    "new_str",
                    new,
                    "No replacement was performed. `new_str` and `old_str` must be different.",
                ));
            }
            str_replace(&path, old, new, history)
        }
        "insert" => {
            let line = a
                .insert_line
                .ok_or_else(|| missing("insert_line", "insert"))?;
            let new = a
                .new_str
                .as_ref()
                .ok_or_else(|| missing("new_str", "insert"))?;
            insert(&path, line, new, history)
        }
        "undo_edit" => undo(&path, history),
        other => Err(format!(
            "Unrecognized command {other}. The allowed commands for the file_editor tool are: {}",
            COMMANDS.join(", ")
        )),
    }
}

fn validate_path(command: &str, path: &Path, raw: &str, cwd: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        let mut hint = "The path should be an absolute path.".to_owned();
        let suggested = cwd.join(path);
        if suggested.exists() {
            hint.push_str(&format!(" Maybe you meant {}?", suggested.display()));
        }
        return Err(invalid("path", raw, &hint));
    }
    let exists = path.exists();
    if command == "create" && exists {
        return Err(invalid(
            "path",
            raw,
            &format!(
                "File already exists at: {raw}. Cannot overwrite files using command `create`."
            ),
        ));
    }
    if command != "create" && !exists {
        return Err(invalid(
            "path",
            raw,
            &format!("The path {raw} does not exist. Please provide a valid path."),
        ));
    }
    if command != "view" && path.is_dir() {
        return Err(invalid(
            "path",
            raw,
            &format!(
                "The path {raw} is a directory and only the `view` command can be used on \
                 directories."
            ),
        ));
    }
    Ok(())
}

/// A text file's content and whether it was stored as Latin-1 rather than UTF-8.
struct TextFile {
    text: String,
    latin1: bool,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn read_text(path: &Path) -> Result<TextFile, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("Ran into {e} while trying to read {}", path.display()))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "File validation failed for {}: File is too large ({:.1}MB). Maximum allowed size is \
             10MB.",
            path.display(),
            meta.len() as f64 / 1024.0 / 1024.0
        ));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| format!("Ran into {e} while trying to read {}", path.display()))?;
    match String::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => Ok(TextFile {
            text,
            latin1: false,
        }),
        Ok(_) => Err(binary_error(path)),
        Err(e) => {
            let bytes = e.into_bytes();
            if bytes.contains(&0) || looks_binary(&bytes) {
                return Err(binary_error(path));
            }
            Ok(TextFile {
                text: bytes.iter().map(|&b| b as char).collect(),
                latin1: true,
            })
        }
    }
}

fn looks_binary(bytes: &[u8]) -> bool {
    let sample = &bytes[..bytes.len().min(8192)];
    let control = sample
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0c | 0x1b))
        .count();
    control * 10 > sample.len().max(1)
}

fn binary_error(path: &Path) -> String {
    format!(
        "File validation failed for {}: File appears to be binary and this file type cannot be \
         read or edited by this tool.",
        path.display()
    )
}

/// Writes `text` atomically (temp file + rename), keeping the file mode; Latin-1 files stay
/// Latin-1 when the text allows it.
fn write_file(path: &Path, text: &str, latin1: Option<bool>) -> Result<(), String> {
    let fail =
        |e: std::io::Error| format!("Ran into {e} while trying to write to {}", path.display());
    let bytes: Vec<u8> = if latin1 == Some(true) && text.chars().all(|c| (c as u32) < 256) {
        text.chars().map(|c| c as u8).collect()
    } else {
        text.as_bytes().to_vec()
    };
    let parent = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(fail)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.{:08x}.tmp", rand::random::<u32>()));
    let result = (|| {
        std::fs::write(&tmp, &bytes)?;
        if let Ok(meta) = std::fs::metadata(path) {
            std::fs::set_permissions(&tmp, meta.permissions())?;
        }
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}

fn push_history(history: &Mutex<HashMap<PathBuf, Vec<String>>>, path: &Path, text: String) {
    let mut h = history.lock().unwrap_or_else(|e| e.into_inner());
    let list = h.entry(path.to_path_buf()).or_default();
    list.push(text);
    if list.len() > MAX_HISTORY {
        list.remove(0);
    }
    // Bound the memory all histories use: drop the oldest entries of the longest lists.
    let mut total: usize = h.values().flatten().map(String::len).sum();
    while total > MAX_HISTORY_BYTES {
        let Some(longest) = h
            .values_mut()
            .filter(|l| !l.is_empty())
            .max_by_key(|l| l.len())
        else {
            break;
        };
        total -= longest.remove(0).len();
    }
}

/// Lines as Python iterates a text file: each with its line ending.
fn split_lines_keep(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

/// Lines `start..=end` (1-based) of `text`, with their endings.
fn line_range(text: &str, start: usize, end: usize) -> String {
    split_lines_keep(text)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i + 1 >= start && *i < end)
        .map(|(_, l)| l)
        .collect()
}

/// `cat -n`-style output of a snippet starting at line `start`.
fn make_output(snippet: &str, description: &str, start: usize) -> String {
    let snippet = maybe_truncate(snippet, MAX_RESPONSE_CHARS, FILE_CLIPPED);
    let mut lines: Vec<&str> = snippet.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    let numbered: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{:6}\t{l}", i + start))
        .collect();
    let mut out = format!("Here's the result of running `cat -n` on {description}:\n");
    if !numbered.is_empty() {
        out.push_str(&numbered.join("\n"));
        out.push('\n');
    }
    out
}

fn view(path: &Path, view_range: Option<&[i64]>) -> Result<Done, String> {
    let shown = path.to_string_lossy().into_owned();
    if path.is_dir() {
        if view_range.is_some_and(|r| !r.is_empty()) {
            return Err(invalid(
                "view_range",
                &format!("{:?}", view_range.unwrap_or_default()),
                "The `view_range` parameter is not allowed when `path` points to a directory.",
            ));
        }
        return view_dir(path);
    }
    if is_image(path) {
        use base64::Engine;
        let bytes =
            std::fs::read(path).map_err(|e| format!("Failed to read image file {shown}: {e}"))?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("png")
            .to_ascii_lowercase();
        let mime = match ext.as_str() {
            "jpg" | "jpeg" => "image/jpeg",
            "gif" => "image/gif",
            "webp" => "image/webp",
            "bmp" => "image/bmp",
            _ => "image/png",
        };
        let data = base64::engine::general_purpose::STANDARD.encode(bytes);
        let mut done = Done::text(
            format!("Image file {shown} read successfully. Displaying image content."),
            path,
        );
        done.image_url = Some(format!("data:{mime};base64,{data}"));
        return Ok(done);
    }
    let file = read_text(path)?;
    let num_lines = split_lines_keep(&file.text).len();
    let Some(range) = view_range.filter(|r| !r.is_empty()) else {
        return Ok(Done::text(make_output(&file.text, &shown, 1), path));
    };
    let range_text = format!(
        "[{}]",
        range
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if range.len() != 2 {
        return Err(invalid(
            "view_range",
            &range_text,
            "It should be a list of two integers.",
        ));
    }
    let (start, mut end) = (range[0], range[1]);
    let n = num_lines as i64;
    if start < 1 || start > n {
        return Err(invalid(
            "view_range",
            &range_text,
            &format!(
                "Its first element `{start}` should be within the range of lines of the file: \
                 [1, {n}]."
            ),
        ));
    }
    let mut warning = None;
    if end == -1 {
        end = n;
    } else if end > n {
        warning = Some(format!(
            "We only show up to {n} since there're only {n} lines in this file."
        ));
        end = n;
    }
    if end < start {
        return Err(invalid(
            "view_range",
            &range_text,
            &format!(
                "Its second element `{end}` should be greater than or equal to the first \
                 element `{start}`."
            ),
        ));
    }
    let snippet = line_range(&file.text, start as usize, end as usize);
    let mut out = make_output(&snippet, &shown, start as usize);
    if let Some(w) = warning {
        out = format!("NOTE: {w}\n{out}");
    }
    Ok(Done::text(out, path))
}

fn view_dir(path: &Path) -> Result<Done, String> {
    let root = path.to_string_lossy().trim_end_matches('/').to_owned();
    let root = if root.is_empty() {
        "/".to_owned()
    } else {
        root
    };
    let sorted = |dir: &Path| -> std::io::Result<Vec<(String, bool)>> {
        let mut items: Vec<(String, bool)> = std::fs::read_dir(dir)?
            .flatten()
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let is_dir = e.path().is_dir();
                (name, is_dir)
            })
            .collect();
        items.sort();
        Ok(items)
    };
    let top = sorted(path).map_err(|e| e.to_string())?;
    let hidden = top.iter().filter(|(n, _)| n.starts_with('.')).count();
    let join = |a: &str, b: &str| {
        if a.ends_with('/') {
            format!("{a}{b}")
        } else {
            format!("{a}/{b}")
        }
    };
    let mut lines = vec![format!("{}/", root.trim_end_matches('/'))];
    if root == "/" {
        lines[0] = "/".into();
    }
    for (name, is_dir) in top.iter().filter(|(n, _)| !n.starts_with('.')) {
        let p = join(&root, name);
        if *is_dir {
            lines.push(format!("{p}/"));
            if let Ok(children) = sorted(&path.join(name)) {
                for (child, child_dir) in children.iter().filter(|(n, _)| !n.starts_with('.')) {
                    let cp = join(&p, child);
                    lines.push(if *child_dir { format!("{cp}/") } else { cp });
                }
            }
        } else {
            lines.push(p);
        }
    }
    let mut msg = format!(
        "Here's the files and directories up to 2 levels deep in {}, excluding hidden items:\n{}",
        path.display(),
        lines.join("\n")
    );
    if hidden > 0 {
        msg.push_str(&format!(
            "\n\n{hidden} hidden files/directories in this directory are excluded. You can use \
             'ls -la {}' to see them.",
            path.display()
        ));
    }
    Ok(Done::text(
        maybe_truncate(&msg, MAX_RESPONSE_CHARS, DIR_CLIPPED),
        path,
    ))
}

fn str_replace(
    path: &Path,
    old: &str,
    new: &str,
    history: &Mutex<HashMap<PathBuf, Vec<String>>>,
) -> Result<Done, String> {
    let file = read_text(path)?;
    let content = &file.text;
    let find_all = |needle: &str| -> Vec<usize> {
        if needle.is_empty() {
            return (0..=content.len())
                .filter(|&i| content.is_char_boundary(i))
                .collect();
        }
        content.match_indices(needle).map(|(i, _)| i).collect()
    };
    let mut needle = old.to_owned();
    let mut hits = find_all(&needle);
    if hits.is_empty() {
        needle = old.trim().to_owned();
        hits = find_all(&needle);
        if hits.is_empty() {
            return Err(format!(
                "No replacement was performed, old_str `{needle}` did not appear verbatim in {}.",
                path.display()
            ));
        }
    }
    let line_of = |i: usize| content[..i].matches('\n').count() + 1;
    if hits.len() > 1 {
        let mut lines: Vec<usize> = hits.iter().map(|&i| line_of(i)).collect();
        lines.dedup();
        let list: Vec<String> = lines.iter().map(usize::to_string).collect();
        return Err(format!(
            "No replacement was performed. Multiple occurrences of old_str `{needle}` in lines \
             [{}]. Please ensure it is unique.",
            list.join(", ")
        ));
    }
    let idx = hits[0];
    let new_content = format!("{}{new}{}", &content[..idx], &content[idx + needle.len()..]);
    write_file(path, &new_content, Some(file.latin1))?;
    push_history(history, path, content.clone());
    let line = line_of(idx);
    let start = line.saturating_sub(SNIPPET_CONTEXT);
    let end = line + SNIPPET_CONTEXT + new.matches('\n').count();
    let snippet = line_range(&new_content, start + 1, end);
    let shown = path.display();
    let text = format!(
        "The file {shown} has been edited. {}Review the changes and make sure they are as \
         expected. Edit the file again if necessary.",
        make_output(&snippet, &format!("a snippet of {shown}"), start + 1)
    );
    Ok(Done {
        text,
        path: path.to_string_lossy().into_owned(),
        prev_exist: true,
        old_content: Some(content.clone()),
        new_content: Some(new_content),
        image_url: None,
    })
}

fn insert(
    path: &Path,
    insert_line: i64,
    new: &str,
    history: &Mutex<HashMap<PathBuf, Vec<String>>>,
) -> Result<Done, String> {
    let file = read_text(path)?;
    let lines = split_lines_keep(&file.text);
    let n = lines.len();
    if insert_line < 0 || insert_line as usize > n {
        return Err(invalid(
            "insert_line",
            &insert_line.to_string(),
            &format!("It should be within the range of allowed values: [0, {n}]"),
        ));
    }
    let at = insert_line as usize;
    let new_lines: Vec<&str> = new.split('\n').collect();
    let mut out = String::with_capacity(file.text.len() + new.len() + 1);
    for l in &lines[..at] {
        out.push_str(l);
    }
    if at > 0 && !out.ends_with('\n') {
        out.push('\n');
    }
    for l in &new_lines {
        out.push_str(l);
        out.push('\n');
    }
    for l in &lines[at..] {
        out.push_str(l);
    }
    write_file(path, &out, Some(file.latin1))?;
    push_history(history, path, file.text.clone());
    let start = at.saturating_sub(SNIPPET_CONTEXT);
    let end = (n + new_lines.len()).min(at + SNIPPET_CONTEXT + new_lines.len());
    let snippet = line_range(&out, start + 1, end);
    let text = format!(
        "The file {} has been edited. {}Review the changes and make sure they are as expected \
         (correct indentation, no duplicate lines, etc). Edit the file again if necessary.",
        path.display(),
        make_output(
            &snippet,
            "a snippet of the edited file",
            (at + 1).saturating_sub(SNIPPET_CONTEXT).max(1)
        )
    );
    Ok(Done {
        text,
        path: path.to_string_lossy().into_owned(),
        prev_exist: true,
        old_content: Some(file.text),
        new_content: Some(out),
        image_url: None,
    })
}

fn undo(path: &Path, history: &Mutex<HashMap<PathBuf, Vec<String>>>) -> Result<Done, String> {
    let current = read_text(path)?;
    let previous = {
        let mut h = history.lock().unwrap_or_else(|e| e.into_inner());
        h.get_mut(path).and_then(Vec::pop)
    };
    let Some(previous) = previous else {
        return Err(format!("No edit history found for {}.", path.display()));
    };
    write_file(path, &previous, Some(current.latin1))?;
    let shown = path.to_string_lossy().into_owned();
    Ok(Done {
        text: format!(
            "Last edit to {shown} undone successfully. {}",
            make_output(&previous, &shown, 1)
        ),
        path: shown,
        prev_exist: true,
        old_content: Some(current.text),
        new_content: Some(previous),
        image_url: None,
    })
}

#[cfg(test)]
mod tests;
