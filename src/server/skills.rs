//! `/api/skills*`: the skills an agent would load (`POST /api/skills`, what
//! `RemoteWorkspace.load_skills_from_agent_server()` asks for), the catalogue, the public
//! skills repository, and installed skills.
//!
//! Public skills come from a local clone of the public extensions repository under
//! `<persistence>/cache/skills/public-skills`, made or updated by `POST /api/skills/sync`
//! (requests never reach the network on their own). Org skills are not fetched.

use std::path::PathBuf;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::error::{ApiError, ValidJson, ValidPath, ValidationIssue};
use crate::skills::installed::{InstallError, Installed};
use crate::skills::{self, Skill};

const PUBLIC_REPO: &str = "https://github.com/OpenHands/extensions";

/// Routes of the Skills group.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_skills))
        .routes(routes!(get_skill_catalog))
        .routes(routes!(get_skill_marketplace))
        .routes(routes!(sync_skills))
        .routes(routes!(install_skill))
        .routes(routes!(list_installed_skills))
        .routes(routes!(
            get_installed_skill,
            patch_installed_skill,
            uninstall_skill
        ))
        .routes(routes!(refresh_installed_skill))
}

fn public_clone(state: &AppState) -> PathBuf {
    state
        .config
        .persistence_dir
        .join("cache/skills/public-skills")
}

/// Public skills from the local clone (none when it was never synced).
fn public_skills(clone: &std::path::Path) -> Vec<Skill> {
    skills::load_dir(&clone.join("skills"), &Default::default())
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))
}

#[derive(Debug, Deserialize)]
struct SkillsRequest {
    #[serde(default = "yes")]
    load_public: bool,
    #[serde(default = "yes")]
    load_user: bool,
    #[serde(default = "yes")]
    load_project: bool,
    #[serde(default = "yes")]
    #[allow(dead_code)]
    load_org: bool,
    project_dir: Option<String>,
    sandbox_config: Option<SandboxConfig>,
}

#[derive(Debug, Deserialize)]
struct SandboxConfig {
    #[serde(default)]
    exposed_urls: Vec<Value>,
}

fn yes() -> bool {
    true
}

/// The skills an agent in `project_dir` would load, merged by precedence (sandbox <
/// public and user < project; a later tier replaces an earlier skill of the same name in place).
#[utoipa::path(post, path = "/api/skills", tag = "Skills")]
async fn get_skills(
    State(state): State<AppState>,
    ValidJson(body): ValidJson<SkillsRequest>,
) -> Result<Json<Value>, ApiError> {
    let persistence = state.config.persistence_dir.clone();
    let clone = public_clone(&state);
    let answer = blocking(move || {
        let sandbox: Vec<Skill> = body
            .sandbox_config
            .as_ref()
            .and_then(|c| skills::work_hosts(&c.exposed_urls))
            .into_iter()
            .collect();
        let mut base = Vec::new();
        if body.load_public {
            skills::merge(&mut base, public_skills(&clone));
        }
        if body.load_user {
            skills::merge(
                &mut base,
                skills::load_user(home().as_deref(), &persistence),
            );
        }
        let project = match (&body.project_dir, body.load_project) {
            (Some(dir), true) if !dir.is_empty() => skills::load_project(std::path::Path::new(dir)),
            _ => Vec::new(),
        };
        let sources = json!({"sandbox": sandbox.len(), "registered_marketplaces": 0,
                             "sdk_base": base.len(), "org": 0, "project": project.len()});
        let mut all = sandbox;
        skills::merge(&mut all, base);
        skills::merge(&mut all, project);
        json!({"skills": all.iter().map(Skill::info).collect::<Vec<_>>(), "sources": sources})
    })
    .await?;
    Ok(Json(answer))
}

/// Public and user skills, each with its `origin`.
#[utoipa::path(get, path = "/api/skills/catalog", tag = "Skills")]
async fn get_skill_catalog(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let persistence = state.config.persistence_dir.clone();
    let clone = public_clone(&state);
    let list = blocking(move || {
        let user = skills::load_user(home().as_deref(), &persistence);
        let user_names: Vec<String> = user.iter().map(|s| s.name.clone()).collect();
        let mut all = public_skills(&clone);
        skills::merge(&mut all, user);
        all.iter()
            .map(|s| {
                let mut info = s.info();
                let user = user_names.contains(&s.name);
                info["origin"] = json!(if user { "user" } else { "public" });
                info
            })
            .collect::<Vec<_>>()
    })
    .await?;
    Ok(Json(json!({ "skills": list })))
}

/// Skills offered by the public marketplace (from the local clone's
/// `marketplaces/default.json`), with whether each is installed.
#[utoipa::path(get, path = "/api/skills/marketplace", tag = "Skills")]
async fn get_skill_marketplace(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let clone = public_clone(&state);
    let installed = Installed::new(&state.config.persistence_dir);
    let list = blocking(move || {
        let names: Vec<String> = installed
            .list()
            .iter()
            .filter_map(|s| s["name"].as_str().map(str::to_string))
            .collect();
        public_skills(&clone)
            .into_iter()
            .map(|s| {
                json!({"name": s.name, "description": s.description,
                       "source": format!("{PUBLIC_REPO}/skills/{}", s.name),
                       "installed": names.contains(&s.name)})
            })
            .collect::<Vec<_>>()
    })
    .await?;
    Ok(Json(json!({ "skills": list })))
}

/// Clones (or updates) the public skills repository; always 200 with a status.
#[utoipa::path(post, path = "/api/skills/sync", tag = "Skills")]
async fn sync_skills(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let clone = public_clone(&state);
    let ok = blocking(move || {
        let mut cmd = crate::util::git_command();
        if clone.join(".git").is_dir() {
            cmd.arg("-C")
                .arg(&clone)
                .args(["pull", "--ff-only", "--quiet"]);
        } else {
            if let Some(parent) = clone.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            cmd.args(["clone", "--depth", "1", "--quiet", PUBLIC_REPO])
                .arg(&clone);
        }
        cmd.env_clear()
            .envs(crate::util::child_env().iter().map(|(k, v)| (k, v)))
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.status().is_ok_and(|s| s.success())
    })
    .await?;
    Ok(Json(if ok {
        json!({"status": "success", "message": "Skills repository synced successfully"})
    } else {
        json!({"status": "error", "message": "Failed to sync skills repository"})
    }))
}

fn install_error(e: InstallError) -> ApiError {
    match e {
        InstallError::NotInstalled(_) => ApiError::NotFound(e.to_string()),
        InstallError::Exists => ApiError::Conflict(e.to_string()),
        InstallError::Fetch | InstallError::RefreshFetch(_) => ApiError::BadRequest(e.to_string()),
        InstallError::Invalid | InstallError::RefreshInvalid(_) => {
            ApiError::Unprocessable(e.to_string())
        }
        InstallError::Io(e) => ApiError::Internal(e.to_string()),
    }
}

fn skill_name(name: &str) -> Result<(), ApiError> {
    if crate::skills::installed::valid_name(name) {
        return Ok(());
    }
    Err(ApiError::Validation(vec![ValidationIssue::new(
        "string_pattern_mismatch",
        &["path", "skill_name"],
        "String should match pattern '^[a-z0-9]+(-[a-z0-9]+)*$'",
    )
    .with_input(name)]))
}

#[derive(Debug, Deserialize)]
struct InstallRequest {
    source: String,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    repo_path: Option<String>,
    #[serde(default)]
    force: bool,
}

/// Installs a skill from a local directory or a git repository.
#[utoipa::path(post, path = "/api/skills/install", tag = "Skills")]
async fn install_skill(
    State(state): State<AppState>,
    ValidJson(body): ValidJson<InstallRequest>,
) -> Result<Json<Value>, ApiError> {
    if body.source.is_empty() {
        return Err(ApiError::Validation(vec![ValidationIssue::new(
            "string_too_short",
            &["body", "source"],
            "String should have at least 1 character",
        )
        .with_input("")]));
    }
    let installed = Installed::new(&state.config.persistence_dir);
    let answer = blocking(move || {
        installed.install(
            &body.source,
            body.git_ref.as_deref(),
            body.repo_path.as_deref(),
            body.force,
        )
    })
    .await?
    .map_err(install_error)?;
    Ok(Json(answer))
}

/// The installed skills.
#[utoipa::path(get, path = "/api/skills/installed", tag = "Skills")]
async fn list_installed_skills(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let installed = Installed::new(&state.config.persistence_dir);
    let list = blocking(move || installed.list()).await?;
    Ok(Json(json!({ "skills": list })))
}

/// One installed skill.
#[utoipa::path(get, path = "/api/skills/installed/{skill_name}", tag = "Skills")]
async fn get_installed_skill(
    State(state): State<AppState>,
    ValidPath(name): ValidPath<String>,
) -> Result<Json<Value>, ApiError> {
    skill_name(&name)?;
    let installed = Installed::new(&state.config.persistence_dir);
    let got = blocking(move || installed.get(&name)).await?;
    Ok(Json(got.map_err(install_error)?))
}

#[derive(Debug, Deserialize)]
struct PatchRequest {
    enabled: bool,
}

/// Enables or disables an installed skill.
#[utoipa::path(patch, path = "/api/skills/installed/{skill_name}", tag = "Skills")]
async fn patch_installed_skill(
    State(state): State<AppState>,
    ValidPath(name): ValidPath<String>,
    ValidJson(body): ValidJson<PatchRequest>,
) -> Result<Json<Value>, ApiError> {
    skill_name(&name)?;
    let installed = Installed::new(&state.config.persistence_dir);
    let n = name.clone();
    blocking(move || installed.set_enabled(&n, body.enabled))
        .await?
        .map_err(install_error)?;
    Ok(Json(json!({"name": name, "enabled": body.enabled})))
}

/// Uninstalls a skill.
#[utoipa::path(delete, path = "/api/skills/installed/{skill_name}", tag = "Skills")]
async fn uninstall_skill(
    State(state): State<AppState>,
    ValidPath(name): ValidPath<String>,
) -> Result<Json<Value>, ApiError> {
    skill_name(&name)?;
    let installed = Installed::new(&state.config.persistence_dir);
    let n = name.clone();
    blocking(move || installed.uninstall(&n))
        .await?
        .map_err(install_error)?;
    Ok(Json(
        json!({"message": format!("Skill '{name}' uninstalled")}),
    ))
}

/// Fetches an installed skill's source again (the installed copy stays when that fails).
#[utoipa::path(
    post,
    path = "/api/skills/installed/{skill_name}/refresh",
    tag = "Skills"
)]
async fn refresh_installed_skill(
    State(state): State<AppState>,
    ValidPath(name): ValidPath<String>,
) -> Result<Json<Value>, ApiError> {
    skill_name(&name)?;
    let installed = Installed::new(&state.config.persistence_dir);
    let n = name.clone();
    let skill = blocking(move || installed.refresh(&n))
        .await?
        .map_err(install_error)?;
    Ok(Json(
        json!({"message": format!("Skill '{name}' updated"), "skill": skill}),
    ))
}
