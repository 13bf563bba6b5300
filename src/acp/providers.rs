//! The ACP servers the reference knows (`ACP_PROVIDERS`): their default launch command, the
//! binary that replaces it when installed, their default session mode, and how to recognise
//! them from the name they give in `initialize`.

use serde_json::Value;

/// One known ACP server.
#[derive(Debug)]
pub struct Provider {
    pub key: &'static str,
    /// The default command (an `npx` invocation of a pinned package).
    pub command: &'static [&'static str],
    /// The installed binary used instead of `npx`, and its extra arguments.
    pub binary: &'static str,
    pub binary_args: &'static [&'static str],
    pub session_mode: Option<&'static str>,
    /// Lower-case substring of `agentInfo.name` that identifies the server.
    pub name_hint: &'static str,
}

/// The reference's providers.
pub const PROVIDERS: [Provider; 6] = [
    Provider {
        key: "claude-code",
        command: &[
            "npx",
            "-y",
            "--prefer-offline",
            "@agentclientprotocol/claude-agent-acp@0.63.0",
        ],
        binary: "claude-agent-acp",
        binary_args: &[],
        session_mode: Some("bypassPermissions"),
        name_hint: "claude-agent",
    },
    Provider {
        key: "codex",
        command: &[
            "npx",
            "-y",
            "--prefer-offline",
            "@agentclientprotocol/codex-acp@1.10.0",
        ],
        binary: "codex-acp",
        binary_args: &[],
        session_mode: Some("agent-full-access"),
        name_hint: "codex-acp",
    },
    Provider {
        key: "gemini-cli",
        command: &[
            "npx",
            "-y",
            "--prefer-offline",
            "@google/gemini-cli@0.46.0",
            "--acp",
        ],
        binary: "gemini",
        binary_args: &["--acp"],
        session_mode: Some("default"),
        name_hint: "gemini-cli",
    },
    Provider {
        key: "kimi-code",
        command: &[
            "npx",
            "-y",
            "--prefer-offline",
            "@moonshot-ai/kimi-code@0.38.0",
            "acp",
        ],
        binary: "kimi",
        binary_args: &["acp"],
        session_mode: Some("yolo"),
        name_hint: "kimi",
    },
    Provider {
        key: "pi",
        command: &[
            "npx",
            "-y",
            "--prefer-offline",
            "--package=pi-acp@0.0.33",
            "--package=@earendil-works/pi-coding-agent@0.83.0",
            "pi-acp",
        ],
        binary: "pi-acp",
        binary_args: &[],
        session_mode: None,
        name_hint: "pi-acp",
    },
    Provider {
        key: "opencode",
        command: &[
            "npx",
            "-y",
            "--prefer-offline",
            "opencode-ai@1.18.23",
            "acp",
        ],
        binary: "opencode",
        binary_args: &["acp"],
        session_mode: Some("build"),
        name_hint: "opencode",
    },
];

/// The provider of `acp_server`.
pub fn by_key(key: &str) -> Option<&'static Provider> {
    PROVIDERS.iter().find(|p| p.key == key)
}

/// The provider a server is, from the name it gave in `initialize`.
pub fn detect(agent_name: &str) -> Option<&'static Provider> {
    let name = agent_name.to_ascii_lowercase();
    PROVIDERS.iter().find(|p| name.contains(p.name_hint))
}

fn on_path(binary: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file()))
}

/// The command that launches the ACP server of `settings` (`ACPAgentSettings`): the given one,
/// else the provider's (its installed binary when there is one), plus `acp_args`.
pub fn resolve_command(settings: &Value) -> Result<Vec<String>, String> {
    let given: Vec<String> = settings["acp_command"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let server = settings["acp_server"].as_str().unwrap_or("claude-code");
    let mut command = if !given.is_empty() {
        given
    } else {
        let provider = by_key(server).ok_or_else(|| {
            "ACPAgentSettings.acp_command must be set when acp_server='custom' — there is no \
             default to fall back to"
                .to_string()
        })?;
        if on_path(provider.binary) {
            std::iter::once(provider.binary)
                .chain(provider.binary_args.iter().copied())
                .map(str::to_string)
                .collect()
        } else {
            provider.command.iter().map(|s| s.to_string()).collect()
        }
    };
    command.extend(
        settings["acp_args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string)),
    );
    Ok(command)
}
