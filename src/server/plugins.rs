//! `/api/plugins*`: locally available plugins, the strict fetch, installed plugins (install,
//! list, get, enable/disable, uninstall, refresh) and the public marketplace catalog. Thin
//! wrappers over [`crate::plugins`]; request bodies are checked against the reference's own
//! models ([`crate::schema`]).

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::error::{ApiError, ValidObject, ValidPath, ValidationIssue};
use crate::plugins::{self, strict, PluginError, Plugins};

/// Routes of the Plugins group.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_plugins))
        .routes(routes!(fetch_plugin))
        .routes(routes!(install_plugin))
        .routes(routes!(list_installed_plugins))
        .routes(routes!(
            get_installed_plugin,
            set_plugin_enabled,
            uninstall_plugin
        ))
        .routes(routes!(refresh_plugin))
        .routes(routes!(plugin_marketplace))
}

fn service(state: &AppState) -> Plugins {
    Plugins::new(&state.config.persistence_dir)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Validates `body` as the reference's model `model`; answers its dump.
fn checked(model: &str, body: &Value) -> Result<Value, ApiError> {
    crate::schema::validate(model, body, &[json!("body")]).map_err(ApiError::Validation)
}

/// The `{plugin_name}` path parameter: 1..255 characters, kebab-case.
fn plugin_name(name: &str) -> Result<(), ApiError> {
    let issue = |kind: &str, msg: &str| {
        Err(ApiError::Validation(vec![ValidationIssue::new(
            kind,
            &["path", "plugin_name"],
            msg,
        )
        .with_input(name)]))
    };
    if name.chars().count() > 255 {
        return issue(
            "string_too_long",
            "String should have at most 255 characters",
        );
    }
    if !plugins::installed::valid_name(name) {
        return issue(
            "string_pattern_mismatch",
            "String should match pattern '^[a-z0-9]+(?:-[a-z0-9]+)*$'",
        );
    }
    Ok(())
}

/// The locally available plugins: the user's (`~/.agents/plugins`, `<persistence>/plugins`,
/// enabled installed ones) and the project's (`.agents/plugins`, `.openhands/plugins`).
#[utoipa::path(post, path = "/api/plugins", tag = "Plugins", request_body = Object,
    responses((status = 200, description = "PluginsResponse")))]
async fn list_plugins(
    State(state): State<AppState>,
    ValidObject(body): ValidObject,
) -> Result<Json<Value>, ApiError> {
    let req = checked("PluginsRequest", &body)?;
    let svc = service(&state);
    let list = blocking(move || {
        let user = req["load_user"].as_bool().unwrap_or(true);
        let project = req["load_project"].as_bool().unwrap_or(true);
        svc.available(user, project, req["project_dir"].as_str())
            .iter()
            .map(plugins::plugin_info)
            .collect::<Vec<_>>()
    })
    .await?;
    Ok(Json(json!({ "plugins": list })))
}

/// The `secrets` of a fetch request: each a `StaticSecret` or `LookupSecret`.
fn secret_issues(secrets: &Value) -> Vec<ValidationIssue> {
    let Some(map) = secrets.as_object() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, v) in map {
        let loc = [json!("body"), json!("secrets"), json!(name)];
        let Some(obj) = v.as_object() else {
            out.push(ValidationIssue {
                kind: "model_attributes_type".into(),
                loc: loc.to_vec(),
                msg: "Input should be a valid dictionary or object to extract fields from".into(),
                input: v.clone(),
            });
            continue;
        };
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let model = match kind {
            "StaticSecret" => "StaticSecret-Input",
            "LookupSecret" => "LookupSecret-Input",
            other => {
                out.push(ValidationIssue {
                    kind: "value_error".into(),
                    loc: loc.to_vec(),
                    msg: format!("Value error, Unknown kind '{other}' for openhands.sdk.secret.secrets.SecretSource; Expected one of: ['LookupSecret', 'StaticSecret']"),
                    input: v.clone(),
                });
                continue;
            }
        };
        let mut rest = obj.clone();
        rest.shift_remove("kind");
        if let Err(issues) = crate::schema::validate(model, &Value::Object(rest), &loc) {
            out.extend(issues);
        }
    }
    out
}

/// Resolves the secrets a fetch request names (`LookupSecret`s fetched as the conversation
/// secrets are).
async fn secret_values(state: &AppState, secrets: &Value) -> Vec<(String, Option<String>)> {
    let local = crate::settings::lookup::LocalSecrets {
        service: state.settings.clone(),
        port: state.config.port,
    };
    let mut out = Vec::new();
    for (name, v) in secrets.as_object().into_iter().flatten() {
        let value = match v.get("kind").and_then(Value::as_str) {
            Some("LookupSecret") => crate::settings::lookup::resolve(v, Some(&local)).await,
            _ => v.get("value").and_then(Value::as_str).map(str::to_string),
        };
        out.push((name.clone(), value));
    }
    out
}

/// Fetches and checks a plugin without installing it (git sources pinned to the commit
/// fetched); errors carry the reference's `{code, message}`.
#[utoipa::path(post, path = "/api/plugins/fetch", tag = "Plugins", request_body = Object,
    responses((status = 200, description = "FetchPluginResponse"),
               (status = 422, description = "Invalid plugin source, ref, path, or plugin"),
               (status = 502, description = "Plugin source unavailable"),
               (status = 504, description = "Plugin fetch timed out")))]
async fn fetch_plugin(
    State(state): State<AppState>,
    ValidObject(body): ValidObject,
) -> Result<Json<Value>, ApiError> {
    let mut without_secrets = body.clone();
    let secrets = without_secrets
        .as_object_mut()
        .and_then(|o| o.shift_remove("secrets"));
    let schema_result = checked("FetchPluginRequest", &without_secrets);
    let mut issues = match &schema_result {
        Ok(_) => Vec::new(),
        Err(ApiError::Validation(i)) => i.clone(),
        Err(_) => Vec::new(),
    };
    match &secrets {
        None => {}
        Some(s @ Value::Object(_)) => {
            let at = issues
                .iter()
                .position(|i| i.loc.get(1).is_some_and(|l| l == "timeout"))
                .unwrap_or(issues.len());
            let found = secret_issues(s);
            issues.splice(at..at, found);
        }
        Some(other) => issues.push(ValidationIssue {
            kind: "dict_type".into(),
            loc: vec![json!("body"), json!("secrets")],
            msg: "Input should be a valid dictionary".into(),
            input: other.clone(),
        }),
    }
    if !issues.is_empty() {
        return Err(ApiError::Validation(issues));
    }
    let req = schema_result?;
    let text = |k: &str| req[k].as_str().map(str::to_string);
    let request = strict::Request {
        source: text("source").unwrap_or_default(),
        git_ref: text("ref"),
        repo_path: text("repo_path"),
        secrets: secret_values(&state, secrets.as_ref().unwrap_or(&Value::Null)).await,
        timeout: std::time::Duration::from_secs(req["timeout"].as_u64().unwrap_or(60)),
    };
    let svc = service(&state);
    let answer =
        blocking(move || strict::fetch(&request, &svc.cache_dir(), &svc.data_root())).await??;
    Ok(Json(answer))
}

/// Installs a plugin from a git URL, GitHub shorthand, or local path.
#[utoipa::path(post, path = "/api/plugins/install", tag = "Plugins", request_body = Object,
    responses((status = 200, description = "InstalledPluginResponse"),
               (status = 400, description = "Failed to fetch plugin source"),
               (status = 409, description = "Plugin already installed (use force=true)"),
               (status = 422, description = "Invalid plugin (bad name, etc.)")))]
async fn install_plugin(
    State(state): State<AppState>,
    ValidObject(body): ValidObject,
) -> Result<Json<Value>, ApiError> {
    let req = checked("InstallPluginRequest", &body)?;
    let store = service(&state).installed();
    let answer = blocking(move || -> Result<Value, PluginError> {
        let text = |k: &str| req[k].as_str().map(str::to_string);
        let entry = store.install(
            &text("source").unwrap_or_default(),
            text("ref").as_deref(),
            text("repo_path").as_deref(),
            req["force"].as_bool().unwrap_or(false),
            None,
        )?;
        Ok(store.response(&entry))
    })
    .await??;
    tracing::info!(plugin = %answer["name"], "plugin installed");
    Ok(Json(answer))
}

/// Every installed plugin, enabled or not (the metadata reconciled with the directories).
#[utoipa::path(get, path = "/api/plugins/installed", tag = "Plugins",
    responses((status = 200, description = "InstalledPluginsListResponse")))]
async fn list_installed_plugins(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let store = service(&state).installed();
    let list = blocking(move || -> std::io::Result<Vec<Value>> {
        Ok(store.list()?.iter().map(|e| store.response(e)).collect())
    })
    .await??;
    Ok(Json(json!({ "plugins": list })))
}

fn not_installed(name: &str) -> ApiError {
    PluginError::NotInstalled(name.into()).into()
}

/// One installed plugin.
#[utoipa::path(get, path = "/api/plugins/installed/{plugin_name}", tag = "Plugins",
    responses((status = 200, description = "InstalledPluginResponse"),
               (status = 404, description = "Plugin not installed")))]
async fn get_installed_plugin(
    State(state): State<AppState>,
    ValidPath(name): ValidPath<String>,
) -> Result<Json<Value>, ApiError> {
    plugin_name(&name)?;
    let store = service(&state).installed();
    let n = name.clone();
    let got = blocking(move || store.get(&n).map(|e| store.response(&e))).await?;
    got.map(Json).ok_or_else(|| not_installed(&name))
}

/// Enables or disables an installed plugin.
#[utoipa::path(patch, path = "/api/plugins/installed/{plugin_name}", tag = "Plugins",
    request_body = Object,
    responses((status = 200, description = "UpdatePluginStateResponse"),
               (status = 404, description = "Plugin not installed")))]
async fn set_plugin_enabled(
    State(state): State<AppState>,
    ValidPath(name): ValidPath<String>,
    ValidObject(body): ValidObject,
) -> Result<Json<Value>, ApiError> {
    plugin_name(&name)?;
    let req = checked("UpdatePluginStateRequest", &body)?;
    let enabled = req["enabled"].as_bool().unwrap_or(false);
    let store = service(&state).installed();
    let n = name.clone();
    if !blocking(move || store.set_enabled(&n, enabled)).await?? {
        return Err(not_installed(&name));
    }
    Ok(Json(json!({"name": name, "enabled": enabled})))
}

/// Uninstalls a plugin (only plugins the metadata tracks).
#[utoipa::path(delete, path = "/api/plugins/installed/{plugin_name}", tag = "Plugins",
    responses((status = 200, description = "UninstallPluginResponse"),
               (status = 404, description = "Plugin not installed")))]
async fn uninstall_plugin(
    State(state): State<AppState>,
    ValidPath(name): ValidPath<String>,
) -> Result<Json<Value>, ApiError> {
    plugin_name(&name)?;
    let store = service(&state).installed();
    let n = name.clone();
    if !blocking(move || store.uninstall(&n)).await?? {
        return Err(not_installed(&name));
    }
    tracing::info!(plugin = %name, "plugin uninstalled");
    Ok(Json(
        json!({"message": format!("Plugin '{name}' uninstalled")}),
    ))
}

/// Reinstalls a plugin from its recorded source (latest); a failed refresh keeps the
/// installed copy.
#[utoipa::path(post, path = "/api/plugins/installed/{plugin_name}/refresh", tag = "Plugins",
    responses((status = 200, description = "UpdatePluginResponse"),
               (status = 400, description = "Failed to fetch the plugin's recorded source"),
               (status = 404, description = "Plugin not installed")))]
async fn refresh_plugin(
    State(state): State<AppState>,
    ValidPath(name): ValidPath<String>,
) -> Result<Json<Value>, ApiError> {
    plugin_name(&name)?;
    let store = service(&state).installed();
    let n = name.clone();
    let plugin = blocking(move || -> Result<Value, PluginError> {
        let entry = store.refresh(&n)?;
        Ok(store.response(&entry))
    })
    .await??;
    Ok(Json(
        json!({"message": format!("Plugin '{name}' updated"), "plugin": plugin}),
    ))
}

/// The true plugins of the public extensions marketplace, each with where to fetch it from
/// and whether it is installed.
#[utoipa::path(get, path = "/api/plugins/marketplace", tag = "Plugins",
    responses((status = 200, description = "MarketplaceCatalogResponse")))]
async fn plugin_marketplace(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let svc = service(&state);
    let list = blocking(move || {
        let installed = svc.installed_names();
        plugins::marketplace::catalog(svc.root(), &installed)
    })
    .await?;
    Ok(Json(json!({ "plugins": list })))
}
