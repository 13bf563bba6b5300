//! OpenAI Anthropic Messages (placeholder until implemented).
use super::transport::Transport;
use super::{Completion, CompletionRequest, LlmClient, LlmError};
pub(crate) struct AnthropicClient {
    pub t: Transport,
}
#[async_trait::async_trait]
impl LlmClient for AnthropicClient {
    async fn complete(&self, _r: CompletionRequest) -> Result<Completion, LlmError> {
        let _ = &self.t;
        Err(LlmError::Other("anthropic not implemented yet".into()))
    }
}
