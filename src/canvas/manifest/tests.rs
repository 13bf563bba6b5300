use super::*;

fn hello() -> Value {
    serde_json::from_str(
        r#"{
  "schema_version": 1,
  "name": "hello-app",
  "display_name": "Hello App",
  "version": "0.1.0",
  "description": "A tiny test app",
  "entrypoint": "dist/index.js",
  "icon": "icon.svg",
  "contributes": {"pages": [{"id": "main", "title": "Hello", "path": "/hello"}]},
  "backend": {
"schema_version": 1,
"artifacts": {"linux-amd64": {"path": "backend/backend-linux-amd64.tar.gz", "sha256": "dbb9c59682c42a688090224c9da1f8fc4f35ebdeb004650fb392e29f41a797b4"}},
"argv": ["{artifact_dir}/server.py", "{port}", "{data_dir}"],
"health": {"path": "/health", "timeout_seconds": 10, "interval_seconds": 0.2},
"inherit_environment": ["PATH", "LANG"]
  }
}"#,
    )
    .unwrap()
}

#[test]
fn the_revision_is_the_references() {
    let m = from_value(&hello()).unwrap();
    assert_eq!(
        m.revision(),
        "sha256:e55a2e6635d871a84eeed45999af69f055312b3ca6a69a03f03fab7ac68f7f67"
    );
    let shown = m.to_json();
    assert_eq!(
        shown["backend"]["artifacts"]["linux-amd64"]["url"],
        Value::Null
    );
    assert_eq!(shown["backend"]["health"]["timeout_seconds"], json!(10.0));
    assert_eq!(
        shown
            .as_object()
            .unwrap()
            .keys()
            .next_back()
            .map(String::as_str),
        Some("icon")
    );
}

#[test]
fn lax_values_and_dropped_icons_as_pydantic() {
    let base = json!({"schema_version": "1", "name": "a", "display_name": "A",
                      "version": "1", "entrypoint": "x.js", "icon": "i.png", "extra": 5});
    let m = from_value(&base).unwrap();
    assert_eq!(m.icon, None);
    for (key, bad) in [
        ("version", json!(1)),
        ("description", Value::Null),
        ("schema_version", json!(2)),
        ("schema_version", json!(1.5)),
        ("name", json!("Bad_Name")),
        ("entrypoint", json!("/abs.js")),
        ("entrypoint", json!("a/../b.js")),
        ("entrypoint", json!("")),
        ("contributes", Value::Null),
    ] {
        let mut v = base.clone();
        v[key] = bad.clone();
        assert!(from_value(&v).is_err(), "{key} = {bad} accepted");
    }
    let mut v = base.clone();
    v["schema_version"] = json!(true);
    assert!(from_value(&v).is_ok());
    let be = json!({"schema_version": 1,
                    "artifacts": {"linux-amd64": {"path": "b.tar.gz", "sha256": "a".repeat(64), "strip_components": 0}},
                    "argv": ["{artifact_dir}/x"], "health": {}, "inherit_environment": []});
    let mut v = base.clone();
    v["backend"] = be.clone();
    let m = from_value(&v).unwrap();
    assert_eq!(m.backend.as_ref().unwrap().health.interval_seconds, 0.1);
    for (pointer, bad) in [
        ("/backend/schema_version", json!("1")),
        ("/backend/argv/0", json!("/bin/x")),
        ("/backend/argv", json!(["{artifact_dir}/x", "{x}"])),
        ("/backend/inherit_environment", json!(["HOME"])),
        ("/backend/inherit_environment", json!(["PATH", "PATH"])),
        ("/backend/artifacts/linux-amd64/strip_components", json!(1)),
        ("/backend/artifacts/linux-amd64/path", json!("../b.tar.gz")),
        (
            "/backend/artifacts/linux-amd64/sha256",
            json!("A".repeat(64)),
        ),
        ("/backend/health", json!({"timeout_seconds": 0})),
        ("/backend/health", json!({"path": "health"})),
    ] {
        let mut v = v.clone();
        *v.pointer_mut(pointer)
            .unwrap_or_else(|| panic!("{pointer}")) = bad.clone();
        assert!(from_value(&v).is_err(), "{pointer} = {bad} accepted");
    }
    let mut remote = v.clone();
    remote["backend"]["artifacts"]["linux-amd64"] =
        json!({"url": "https://h/a.tar.gz?x=1", "sha256": "a".repeat(64), "strip_components": "2"});
    let m = from_value(&remote).unwrap();
    let a = &m.backend.unwrap().artifacts[0].1;
    assert_eq!((a.path.as_str(), a.strip_components), ("", 2));
    for url in [
        "http://h/a.tar.gz",
        "https://u:p@h/a.tar.gz",
        "https://h/a.zip",
        "https:///a.tar.gz",
    ] {
        let mut r = remote.clone();
        r["backend"]["artifacts"]["linux-amd64"]["url"] = json!(url);
        assert!(from_value(&r).is_err(), "{url} accepted");
    }
}

#[test]
fn urls_split_like_urllib() {
    let u = UrlParts::split("HTTPS://User@Example.COM:8443/a/b.tar.gz?q=1#f");
    assert_eq!(u.scheme, "https");
    assert_eq!(u.hostname().as_deref(), Some("example.com"));
    assert_eq!(u.port(), Ok(Some(8443)));
    assert!(u.has_userinfo());
    assert_eq!(
        (u.path, u.query, u.fragment),
        ("/a/b.tar.gz", Some("q=1"), Some("f"))
    );
    assert_eq!(
        UrlParts::split("http://[::1]:80/").hostname().as_deref(),
        Some("::1")
    );
    assert!(UrlParts::split("http://h:x/").port().is_err());
}
