//! What the mock is told to do: pacing, keys, model lists and one misbehaviour.

/// How the mock answers. `Default` is a healthy upstream that answers at once.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// The misbehaviour of inference requests (every POST). Listings (`GET /v1/models`,
    /// `/api/tags`, `/api/ps`, SD WebUI's) always answer: discovery has to be trustworthy.
    pub fault: Fault,
    /// Apply `fault` to this many inference requests after [`MockLlm::set`], then be healthy;
    /// `None`: to all of them.
    ///
    /// [`MockLlm::set`]: super::MockLlm::set
    pub fault_times: Option<u64>,
    /// Wait before a non-streamed answer (a model's compute time; the benchmark uses 20 ms).
    pub delay_ms: u64,
    /// Content deltas per stream; 0: one per word of the answer.
    pub deltas: usize,
    /// Gap between two stream events; the first goes out with the headers.
    pub pace_ms: u64,
    /// Answer 401 unless the request carries this key: `Authorization: Bearer KEY`, Gemini's
    /// `x-goog-api-key: KEY` or `?key=KEY`, SD WebUI's `Authorization: Basic base64(KEY)` where
    /// KEY is `user:password`.
    pub require_key: Option<String>,
    /// First part of every answer (`label:model:last user text`), to tell mocks apart.
    pub label: String,
    /// The models of `GET /v1/models` (and DeepSeek's `GET /models`).
    pub models: Vec<String>,
    /// The models of Ollama's `GET /api/tags`; the loaded ones are also in `GET /api/ps`.
    pub ollama_models: Vec<OllamaModel>,
    /// Keep every request for [`MockLlm::requests`]; benchmarks turn it off so memory stays flat.
    ///
    /// [`MockLlm::requests`]: super::MockLlm::requests
    pub record: bool,
    /// Chat answers said word for word, the nth for the nth inference request of this
    /// behaviour (OpenAI dialect); past the list, answers echo as usual.
    pub scripted: Vec<String>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            fault: Fault::None,
            fault_times: None,
            delay_ms: 0,
            deltas: 0,
            pace_ms: 0,
            require_key: None,
            label: "mock".to_owned(),
            models: [
                "gpt-4o-mini",
                "text-embedding-3-small",
                "deepseek-chat",
                "deepseek-reasoner",
            ]
            .map(str::to_owned)
            .to_vec(),
            ollama_models: vec![
                OllamaModel::new("llama3.2", 2_019_393_189, true),
                OllamaModel::new("all-minilm", 45_960_996, false),
            ],
            record: true,
            scripted: Vec::new(),
        }
    }
}

impl Behaviour {
    /// A mock that misbehaves with `fault` on every inference request.
    pub fn fault(fault: Fault) -> Self {
        Self {
            fault,
            ..Self::default()
        }
    }

    /// Misbehave for the next `n` inference requests only, then be healthy.
    pub fn times(mut self, n: u64) -> Self {
        self.fault_times = Some(n);
        self
    }

    /// The fault for the `nth` inference request since this behaviour was set.
    pub(super) fn fault_for(&self, nth: u64) -> &Fault {
        match self.fault_times {
            Some(times) if nth >= times => &Fault::None,
            _ => &self.fault,
        }
    }
}

/// One way to misbehave. Stream faults count data events ("chunks"); DeepSeek's `: keep-alive`
/// comments do not count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// Healthy.
    #[default]
    None,
    /// An error status with a body in the dialect's error shape.
    Error(ErrorReply),
    /// Reset the connection (RST through `SO_LINGER` 0) once the request is read, before any
    /// header.
    Reset,
    /// Close the connection (FIN) once the request is read, before any header.
    Close,
    /// Read the request, then say nothing until the client goes away.
    NoResponse,
    /// Wait this long before the response headers.
    SlowFirstByte { delay_ms: u64 },
    /// Send `after` stream events, then close the connection without the end marker (nor the
    /// chunked terminator). A non-streamed answer sends half its body, then closes.
    StreamCut { after: usize },
    /// Send `after` stream events, then keep the connection open and silent. A non-streamed
    /// answer sends half its body, then stalls.
    StreamStall { after: usize },
    /// Slip a `{not json` event in after `after` events, then go on normally. A non-streamed
    /// body is `{not json`.
    MalformedChunk { after: usize },
    /// Send `after` events, then an error event in the dialect's shape (OpenAI
    /// `data: {"error":{..}}`, Ollama's `{"error":".."}` line) and end without the end marker.
    /// A non-streamed answer is a 500.
    StreamError { after: usize },
    /// End the stream cleanly without its end marker: OpenAI's `data: [DONE]`, Gemini's
    /// `finishReason`, Ollama's `done: true` line.
    MissingDone,
    /// A normal answer stopped by the safety filter: `finish_reason: "content_filter"`,
    /// Gemini's `finishReason: "SAFETY"`. Ollama and SD WebUI have no such thing.
    ContentFilter,
    /// Alternate 503 and success, starting with 503.
    Flapping,
}

impl Fault {
    /// An error status with the provider's usual message.
    pub fn status(status: u16) -> Self {
        Self::Error(ErrorReply::status(status))
    }
}

/// An error answer; the dialect gives it its shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorReply {
    /// HTTP status.
    pub status: u16,
    /// The message; `None`: the provider's usual one for the status.
    pub message: Option<String>,
    /// OpenAI's `error.code`; `None`: the usual one for the status. `context_length_exceeded`
    /// also picks each dialect's context-length message.
    pub code: Option<String>,
    /// A `Retry-After` header, in seconds.
    pub retry_after: Option<u64>,
    /// A retry delay in the body, in seconds: `retry_after` (OpenAI in `error`, Ollama and SD
    /// WebUI at the top), Gemini's `RetryInfo` detail (`retryDelay: "Ns"`).
    pub retry_after_field: Option<u64>,
}

/// The code that asks for each dialect's context-length message.
pub const CONTEXT_LENGTH_EXCEEDED: &str = "context_length_exceeded";

impl ErrorReply {
    /// `status` with the provider's usual message.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            message: None,
            code: None,
            retry_after: None,
            retry_after_field: None,
        }
    }

    /// 429 saying "retry after `secs`" in the header and in the body.
    pub fn rate_limited(secs: u64) -> Self {
        Self {
            retry_after: Some(secs),
            retry_after_field: Some(secs),
            ..Self::status(429)
        }
    }

    /// 400 "This model's maximum context length is ..." (`code: "context_length_exceeded"`).
    pub fn context_length_exceeded() -> Self {
        Self {
            code: Some(CONTEXT_LENGTH_EXCEEDED.to_owned()),
            ..Self::status(400)
        }
    }

    /// The same error with `message`.
    pub fn with_message(mut self, message: &str) -> Self {
        self.message = Some(message.to_owned());
        self
    }

    pub(super) fn is_context_length(&self) -> bool {
        self.code.as_deref() == Some(CONTEXT_LENGTH_EXCEEDED)
    }
}

/// A model an Ollama server holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OllamaModel {
    /// `name:tag`; a bare name is shown as `name:latest`.
    pub name: String,
    /// Size on disk and in memory, bytes.
    pub size: u64,
    /// Bytes in GPU memory while loaded.
    pub size_vram: u64,
    /// Listed by `GET /api/ps`.
    pub loaded: bool,
}

impl OllamaModel {
    /// A model wholly in VRAM when loaded.
    pub fn new(name: &str, size: u64, loaded: bool) -> Self {
        Self {
            name: name.to_owned(),
            size,
            size_vram: size,
            loaded,
        }
    }
}
