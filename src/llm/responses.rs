//! OpenAI Responses API (placeholder until implemented).
use super::transport::Transport;
use super::{Completion, CompletionRequest, LlmClient, LlmError};
pub(crate) struct ResponsesClient {
    pub t: Transport,
}
#[async_trait::async_trait]
impl LlmClient for ResponsesClient {
    async fn complete(&self, _r: CompletionRequest) -> Result<Completion, LlmError> {
        let _ = &self.t;
        Err(LlmError::Other("responses API not implemented yet".into()))
    }
}
