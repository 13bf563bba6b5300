//! The model and provider catalogues the reference serves offline (LiteLLM's model list and
//! OpenHands' verified models, as of the compatible release), embedded as data.

use std::sync::OnceLock;

use serde_json::Value;

const MODELS: &str = include_str!("catalog/models.json");
const VERIFIED: &str = include_str!("catalog/models_verified.json");
const PROVIDERS: &str = include_str!("catalog/providers.json");

/// Models the ChatGPT subscription sign-in offers.
pub const OPENAI_SUBSCRIPTION_MODELS: [&str; 8] = [
    "gpt-5.5",
    "gpt-5.6-luna",
    "gpt-5.6-sol",
    "gpt-5.6-terra",
    "gpt-6-astra",
    "gpt-6-luna",
    "gpt-6-sol",
    "gpt-6.1-sol",
];

fn parse(text: &'static str, cell: &'static OnceLock<Value>) -> &'static Value {
    cell.get_or_init(|| serde_json::from_str(text).unwrap_or(Value::Null))
}

/// Every known model, sorted; or those of `provider` (its own models and its verified ones).
pub fn models(provider: Option<&str>) -> Vec<String> {
    static DOC: OnceLock<Value> = OnceLock::new();
    let doc = parse(MODELS, &DOC);
    let list = match provider {
        None => &doc["models"],
        Some(p) => &doc["by_provider"][p],
    };
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().map(str::to_string))
        .collect()
}

/// `{"models": {provider: [model, ...]}}` of the verified models.
pub fn verified() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    parse(VERIFIED, &DOC)
}

/// `{"providers": [...]}`, sorted.
pub fn providers() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    parse(PROVIDERS, &DOC)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn catalogues_load_and_filter_by_provider() {
        let all = models(None);
        assert!(all.len() > 1000);
        assert!(all.windows(2).all(|w| w[0] <= w[1]));
        let anthropic = models(Some("anthropic"));
        assert!(!anthropic.is_empty() && anthropic.len() < all.len());
        assert!(models(Some("no-such-provider")).is_empty());
        // An empty provider: the models without one (`gpt-4o`, `claude-3-5-sonnet-...`), as
        // the reference's filter answers it.
        let bare = models(Some(""));
        assert_eq!(bare.len(), 632);
        assert!(bare.iter().any(|m| m == "whisper-1"));
        assert!(providers()["providers"]
            .as_array()
            .is_some_and(|p| p.len() > 50));
        assert!(verified()["models"]["openhands"].is_array());
    }
}
