//! Saved workspaces and workspace parents for a GUI's picker: `workspaces.json`
//! (`{"schema_version": 1, "workspaces": [...], "workspaceParents": [...]}`), entries deduplicated
//! by `path`, as the reference keeps them. Nothing here touches the paths themselves.

use std::path::PathBuf;

use serde_json::{json, Map, Value};

use super::store::{self, Read};
use super::SettingsError;

const CORRUPT: &str = "Workspaces file is corrupted";

/// Which list of the file an operation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    Workspaces,
    Parents,
}

/// The store of `workspaces.json` in one directory.
#[derive(Debug)]
pub struct WorkspacesStore {
    path: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

/// Reads the stored lists; `Err` when the file exists but cannot be used (the caller answers
/// 409 and never overwrites it).
fn load(path: &std::path::Path) -> Result<(Vec<Value>, Vec<Value>), SettingsError> {
    let doc = match store::read_json(path).map_err(|e| SettingsError::Io(e.to_string()))? {
        Read::Missing => return Ok((Vec::new(), Vec::new())),
        Read::Corrupt => return Err(SettingsError::Conflict(CORRUPT.into())),
        Read::Json(v) => v,
    };
    let version = doc.get("schema_version").map_or(Some(1), Value::as_u64);
    if !doc.is_object() || version != Some(1) {
        return Err(SettingsError::Conflict(CORRUPT.into()));
    }
    let list = |keys: &[&str]| -> Result<Vec<Value>, SettingsError> {
        let found = keys.iter().find_map(|k| doc.get(*k));
        match found {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) if items.iter().all(valid_stored) => Ok(items.clone()),
            Some(_) => Err(SettingsError::Conflict(CORRUPT.into())),
        }
    };
    Ok((
        list(&["workspaces"])?,
        list(&["workspaceParents", "workspace_parents"])?,
    ))
}

fn valid_stored(item: &Value) -> bool {
    ["id", "name", "path"]
        .iter()
        .all(|k| item.get(*k).is_some_and(Value::is_string))
}

fn answer(workspaces: &[Value], parents: &[Value]) -> Value {
    json!({"workspaces": workspaces, "workspaceParents": parents})
}

/// A problem with one item of a request (pydantic-like, `loc` below the list field).
pub type ItemError = super::FieldError;

/// Validates and normalises a request item: `id`, `name`, `path` (and `parentPath` or
/// `parent_path` for a workspace); other keys are dropped.
pub fn validate_item(list: List, index: usize, item: &Value) -> Result<Value, Vec<ItemError>> {
    let field = match list {
        List::Workspaces => "workspaces",
        List::Parents => "parents",
    };
    let mut errors = Vec::new();
    let mut out = Map::new();
    let loc = |k: &str| vec![Value::from(field), Value::from(index), Value::from(k)];
    let Some(obj) = item.as_object() else {
        return Err(vec![ItemError {
            loc: vec![field.into(), index.into()],
            kind: "model_type",
            msg: "Input should be a valid dictionary or object to extract fields from".into(),
            input: item.clone(),
        }]);
    };
    for (key, max) in [("id", 4096), ("name", 256), ("path", 4096)] {
        match obj.get(key) {
            None => errors.push(ItemError {
                loc: loc(key),
                kind: "missing",
                msg: "Field required".into(),
                input: item.clone(),
            }),
            Some(Value::String(s)) if s.is_empty() => errors.push(ItemError {
                loc: loc(key),
                kind: "string_too_short",
                msg: "String should have at least 1 character".into(),
                input: json!(s),
            }),
            Some(Value::String(s)) if s.chars().count() > max => errors.push(ItemError {
                loc: loc(key),
                kind: "string_too_long",
                msg: format!("String should have at most {max} characters"),
                input: json!(s),
            }),
            Some(Value::String(s)) => {
                out.insert(key.into(), json!(s));
            }
            Some(other) => errors.push(ItemError {
                loc: loc(key),
                kind: "string_type",
                msg: "Input should be a valid string".into(),
                input: other.clone(),
            }),
        }
    }
    if list == List::Workspaces {
        let parent = obj.get("parentPath").or_else(|| obj.get("parent_path"));
        match parent {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.chars().count() <= 4096 => {
                out.insert("parentPath".into(), json!(s));
            }
            Some(other) => errors.push(ItemError {
                loc: loc("parentPath"),
                kind: "string_type",
                msg: "Input should be a valid string of at most 4096 characters".into(),
                input: other.clone(),
            }),
        }
    }
    if errors.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(errors)
    }
}

impl WorkspacesStore {
    /// The store of `<dir>/workspaces.json`.
    pub fn new(dir: PathBuf) -> Self {
        WorkspacesStore {
            path: dir.join("workspaces.json"),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Both lists.
    pub async fn list(&self) -> Result<Value, SettingsError> {
        let path = self.path.clone();
        let (w, p) = tokio::task::spawn_blocking(move || load(&path))
            .await
            .map_err(|e| SettingsError::Io(e.to_string()))??;
        Ok(answer(&w, &p))
    }

    async fn modify(
        &self,
        f: impl FnOnce(&mut Vec<Value>, &mut Vec<Value>) -> Result<bool, SettingsError> + Send + 'static,
    ) -> Result<Value, SettingsError> {
        let _guard = self.lock.lock().await;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let (mut w, mut p) = load(&path)?;
            if f(&mut w, &mut p)? {
                let doc = json!({"schema_version": 1, "workspaces": w, "workspaceParents": p});
                store::write_json(&path, &doc).map_err(|e| SettingsError::Io(e.to_string()))?;
            }
            Ok(answer(&w, &p))
        })
        .await
        .map_err(|e| SettingsError::Io(e.to_string()))?
    }

    /// Appends `items` (validated) whose path is not listed yet; answers both lists.
    pub async fn add(&self, list: List, items: Vec<Value>) -> Result<Value, SettingsError> {
        self.modify(move |w, p| {
            let target = if list == List::Workspaces { w } else { p };
            let mut changed = false;
            for item in items {
                let taken = target.iter().any(|e| e["path"] == item["path"]);
                if !taken {
                    target.push(item);
                    changed = true;
                }
            }
            Ok(changed)
        })
        .await
    }

    /// Removes the entry with `path` (404 when there is none).
    pub async fn remove(&self, list: List, path: String) -> Result<(), SettingsError> {
        self.modify(move |w, p| {
            let target = if list == List::Workspaces { w } else { p };
            let before = target.len();
            target.retain(|e| e["path"] != path.as_str());
            if target.len() == before {
                return Err(SettingsError::NotFound(match list {
                    List::Workspaces => "Workspace not found".into(),
                    List::Parents => "Workspace parent not found".into(),
                }));
            }
            Ok(true)
        })
        .await
        .map(|_| ())
    }
    /// Which file this store keeps (for messages).
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn add_dedupes_by_path_and_remove_reports_absence() {
        let dir = tempfile::tempdir().unwrap();
        let store = WorkspacesStore::new(dir.path().to_path_buf());
        let a = validate_item(
            List::Workspaces,
            0,
            &json!({"id": "1", "name": "A", "path": "/a", "parent_path": "/p"}),
        )
        .unwrap();
        let dup = validate_item(
            List::Workspaces,
            1,
            &json!({"id": "2", "name": "B", "path": "/a"}),
        )
        .unwrap();
        let answer = store.add(List::Workspaces, vec![a, dup]).await.unwrap();
        assert_eq!(
            answer["workspaces"],
            json!([{"id": "1", "name": "A", "path": "/a", "parentPath": "/p"}])
        );
        assert!(store.remove(List::Parents, "/a".into()).await.is_err());
        store.remove(List::Workspaces, "/a".into()).await.unwrap();
        assert_eq!(
            store.list().await.unwrap(),
            json!({"workspaces": [], "workspaceParents": []})
        );
        std::fs::write(store.path(), "{not json").unwrap();
        assert!(matches!(
            store.list().await,
            Err(SettingsError::Conflict(_))
        ));
        assert!(validate_item(List::Parents, 0, &json!({"id": "", "name": "n"})).is_err());
    }
}
