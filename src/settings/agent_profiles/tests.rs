use super::launch::shell_join;
use super::*;

#[test]
fn identity_is_kept_across_overwrites_and_renames() {
    let dir = tempfile::tempdir().unwrap();
    let store = AgentProfileStore::new(dir.path().join("agent-profiles"));
    let p = validate(
        &json!({"name": "a", "llm_profile_ref": "x", "id": "00000000-0000-0000-0000-000000000001"}),
    )
    .unwrap();
    let first = store.save_preserving_identity(p.clone()).unwrap();
    assert_ne!(first["id"], "00000000-0000-0000-0000-000000000001");
    assert_eq!(first["revision"], 0);
    let second = store.save_preserving_identity(p).unwrap();
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["revision"], 1);
    store.rename("a", "b").unwrap();
    let loaded = store.load("b").unwrap();
    assert_eq!(
        (loaded["id"].clone(), loaded["name"].clone()),
        (first["id"].clone(), json!("b"))
    );
    assert_eq!(
        store
            .name_for_id(first["id"].as_str().unwrap())
            .unwrap()
            .as_deref(),
        Some("b")
    );
    assert_eq!(
        store.cascade_rename("x", "y").unwrap(),
        vec!["b".to_string()]
    );
    assert_eq!(store.load("b").unwrap()["llm_profile_ref"], "y");
}

#[test]
fn old_payloads_are_migrated_and_duplicates_merged() {
    let p = validate(
        &json!({"schema_version": 1, "name": "a", "llm_profile_ref": "x",
        "skills": [{"name": "s"}],
        "tools": [{"name": "T"}, {"name": "T", "params": {"k": 1}}]}),
    )
    .unwrap();
    assert_eq!(p["schema_version"], 4);
    assert_eq!(p["tools"], json!([{"name": "T", "params": {"k": 1}}]));
    assert!(matches!(
        validate(&json!({"schema_version": 9, "name": "a"})),
        Err(Invalid::Unreadable)
    ));
    assert_eq!(shell_join(&["a b".into(), "c".into()]), "'a b' c");
}
