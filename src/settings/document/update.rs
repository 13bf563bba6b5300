//! A settings update: the diffs merged into the document (a masked secret keeps the stored
//! value, a new `agent_kind` starts from its variant's defaults) and the result validated,
//! the document unchanged on error.

use serde_json::Value;

use super::defaults::{deep_merge, defaults, fill_defaults, prune_unknown, variant_defaults};
use super::secret_fields::{unseal_value, LLM_SECRET_FIELDS};
use super::validate::{
    agent_specs, check_fields, conversation_specs, validate_mcp_server, FieldError,
};
use super::Settings;
use crate::crypto::{Cipher, MASK};

impl Settings {
    /// Merges the diffs of a settings update and validates the result; on error `self` is
    /// unchanged. Secrets arriving as tokens of our key are decrypted; an empty LLM or critic
    /// key becomes null; the mask keeps the stored value (a client round-tripping a redacted
    /// answer must not erase its key).
    pub fn apply_diffs(
        &mut self,
        agent_diff: Option<&Value>,
        conversation_diff: Option<&Value>,
        misc_diff: Option<&Value>,
        cipher: Option<&Cipher>,
    ) -> Result<(), Vec<FieldError>> {
        let mut agent = self.agent_settings.clone();
        if let Some(diff) = agent_diff {
            let mut diff = diff.clone();
            if !diff.is_object() {
                return Err(vec![FieldError {
                    loc: vec!["agent_settings_diff".into()],
                    kind: "dict_type",
                    msg: "Input should be a valid dictionary".into(),
                    input: diff,
                }]);
            }
            let previous = self.agent_settings.clone();
            let keep_mask = |path: &[&str], diff: &mut Value| {
                let mut slot = &mut *diff;
                for p in path {
                    match slot.get_mut(*p) {
                        Some(s) => slot = s,
                        None => return,
                    }
                }
                if let Value::String(s) = slot {
                    if s == MASK {
                        let mut old = &previous;
                        for p in path {
                            old = &old[*p];
                        }
                        *slot = old.clone();
                    } else if let Ok(plain) = unseal_value(cipher, s) {
                        *s = plain;
                    }
                }
            };
            for (group, field) in LLM_SECRET_FIELDS
                .iter()
                .map(|f| ("llm", *f))
                .chain([("verification", "critic_api_key")])
            {
                // An empty key is no key (the reference stores null).
                if let Some(slot) = diff.get_mut(group).and_then(|g| g.get_mut(field)) {
                    if slot.as_str().is_some_and(|s| s.trim().is_empty()) {
                        *slot = Value::Null;
                    }
                }
                keep_mask(&[group, field], &mut diff);
            }
            if let Some(servers) = diff.get("mcp_config").and_then(Value::as_object) {
                let names: Vec<String> = servers.keys().cloned().collect();
                for name in names {
                    for map in ["env", "headers"] {
                        let keys: Vec<String> = diff["mcp_config"][&name][map]
                            .as_object()
                            .map(|m| m.keys().cloned().collect())
                            .unwrap_or_default();
                        for k in keys {
                            keep_mask(&["mcp_config", &name, map, &k], &mut diff);
                        }
                    }
                }
            }
            // A new `agent_kind` starts from that variant's defaults (no merge across variants).
            if let Some(kind) = diff["agent_kind"].as_str() {
                if agent["agent_kind"].as_str() != Some(kind) {
                    agent = variant_defaults(kind);
                }
            }
            deep_merge(&mut agent, &diff, 0);
            let template = variant_defaults(agent["agent_kind"].as_str().unwrap_or("openhands"));
            fill_defaults(&mut agent, &template);
            prune_unknown(&mut agent, &template);
        }
        if agent["agent_kind"] == "acp" {
            return self.apply_acp(agent, conversation_diff, misc_diff);
        }
        let mut conversation = self.conversation_settings.clone();
        if let Some(diff) = conversation_diff {
            deep_merge(&mut conversation, diff, 0);
            fill_defaults(&mut conversation, &defaults()["conversation_settings"]);
            prune_unknown(&mut conversation, &defaults()["conversation_settings"]);
        }
        let mut errors = check_fields(&agent, agent_specs(), "");
        if !matches!(agent["agent_kind"].as_str(), Some("openhands" | "acp")) {
            errors.push(FieldError {
                loc: vec!["agent_kind".into()],
                kind: "literal_error",
                msg: "Input should be 'openhands' or 'acp'".into(),
                input: agent["agent_kind"].clone(),
            });
        }
        if agent["llm"]["model"].as_str().is_none_or(str::is_empty) {
            errors.push(FieldError {
                loc: vec!["llm".into()],
                kind: "value_error",
                msg: "Value error, model must be specified in LLM".into(),
                input: agent["llm"].clone(),
            });
        }
        if let Some(servers) = agent.get_mut("mcp_config").and_then(Value::as_object_mut) {
            for (name, server) in servers.iter_mut() {
                match validate_mcp_server(server) {
                    Ok(clean) => *server = clean,
                    Err(e) => errors.extend(e.into_iter().map(|mut e| {
                        e.loc.splice(
                            0..0,
                            [Value::from("mcp_config"), Value::from(name.as_str())],
                        );
                        e
                    })),
                }
            }
        } else if !agent["mcp_config"].is_null() {
            errors.push(FieldError {
                loc: vec!["mcp_config".into()],
                kind: "dict_type",
                msg: "Input should be a valid dictionary".into(),
                input: agent["mcp_config"].clone(),
            });
        }
        errors.extend(check_fields(&conversation, conversation_specs(), ""));
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut misc = self.misc_settings.clone();
        if let Some(diff) = misc_diff {
            deep_merge(&mut misc, diff, 0);
        }
        self.agent_settings = agent;
        self.conversation_settings = conversation;
        self.misc_settings = misc;
        Ok(())
    }

    /// The end of [`Settings::apply_diffs`] for ACP agent settings (validated as the reference's
    /// `ACPAgentSettings`).
    fn apply_acp(
        &mut self,
        agent: Value,
        conversation_diff: Option<&Value>,
        misc_diff: Option<&Value>,
    ) -> Result<(), Vec<FieldError>> {
        let agent = crate::schema::validate("ACPAgentSettings", &agent, &[]).map_err(|issues| {
            issues
                .into_iter()
                .map(|i| FieldError {
                    loc: i.loc,
                    kind: match i.kind.as_str() {
                        "literal_error" => "literal_error",
                        "extra_forbidden" => "extra_forbidden",
                        "missing" => "missing",
                        _ => "value_error",
                    },
                    msg: i.msg,
                    input: i.input,
                })
                .collect::<Vec<_>>()
        })?;
        let mut conversation = self.conversation_settings.clone();
        if let Some(diff) = conversation_diff {
            deep_merge(&mut conversation, diff, 0);
            fill_defaults(&mut conversation, &defaults()["conversation_settings"]);
            prune_unknown(&mut conversation, &defaults()["conversation_settings"]);
        }
        let errors = check_fields(&conversation, conversation_specs(), "");
        if !errors.is_empty() {
            return Err(errors);
        }
        if let Some(diff) = misc_diff {
            deep_merge(&mut self.misc_settings, diff, 0);
        }
        self.agent_settings = agent;
        self.conversation_settings = conversation;
        // ACP agents cannot route between models.
        self.active_meta_profile = None;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use serde_json::json;

    #[test]
    fn diffs_merge_deeply_and_nested_null_unsets() {
        let mut s = Settings::default();
        let diff = json!({"llm": {"model": "openai/gpt-4o", "api_key": "sk-1"},
                          "mcp_config": {"a": {"command": "x", "env": {"A": "1", "B": "2"}}}});
        s.apply_diffs(Some(&diff), None, None, None).unwrap();
        assert_eq!(s.agent_settings["llm"]["model"], "openai/gpt-4o");
        assert_eq!(s.agent_settings["llm"]["num_retries"], 5);
        let unset = json!({"mcp_config": {"a": {"env": {"A": null}}}});
        s.apply_diffs(Some(&unset), None, None, None).unwrap();
        assert_eq!(
            s.agent_settings["mcp_config"]["a"]["env"],
            json!({"B": "2"})
        );
        assert_eq!(s.agent_settings["mcp_config"]["a"]["enabled"], true);
    }

    #[test]
    fn a_wrong_type_or_choice_is_refused_and_changes_nothing() {
        let mut s = Settings::default();
        let before = s.clone();
        let bad = json!({"llm": {"temperature": "hot"}});
        let errors = s.apply_diffs(Some(&bad), None, None, None).unwrap_err();
        assert_eq!(errors[0].kind, "float_parsing");
        let bad = json!({"security_analyzer": "maybe"});
        assert!(s.apply_diffs(None, Some(&bad), None, None).is_err());
        let bad = json!({"max_iterations": null});
        assert!(s.apply_diffs(None, Some(&bad), None, None).is_err());
        assert_eq!(s, before);
    }
}
