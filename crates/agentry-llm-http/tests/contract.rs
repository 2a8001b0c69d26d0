//! The HTTP clients against the contract servers of `agentry-llm-contract`:
//! each vendor's real wire format, validated strictly, answered by a brain
//! of canned responses, with injected faults; plus the vendors' documented
//! example bodies served verbatim.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentry_core::{
    AgentRole, ChatMessage, ChatRequest, ChatResponse, Error, ErrorClass, LlmProvider,
    OutputSchema, RequestMeta, ToolCall, ToolDefinition, Usage,
};
use agentry_llm_contract::{fixtures, ContractServer, Fault, Vendor};
use agentry_llm_http::{AnthropicConfig, AnthropicProvider, OpenAiConfig, OpenAiProvider};
use async_trait::async_trait;
use serde_json::{json, Value};

const KEY: &str = "sk-contract-test-key-0123456789";
const MODEL: &str = "test-model";
const VENDORS: [Vendor; 2] = [Vendor::OpenAi, Vendor::Anthropic];

/// Answers with canned responses, in order.
#[derive(Default)]
struct Canned(Mutex<VecDeque<agentry_core::Result<ChatResponse>>>);

#[async_trait]
impl LlmProvider for Canned {
    fn name(&self) -> &str {
        "canned"
    }

    async fn complete(&self, _request: &ChatRequest) -> agentry_core::Result<ChatResponse> {
        self.0
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Err(Error::permanent("the canned brain has no answer left")))
    }
}

fn answer(content: &str, tool_calls: Vec<ToolCall>, usage: (u64, u64)) -> ChatResponse {
    ChatResponse {
        finish_reason: if tool_calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        }
        .into(),
        content: content.into(),
        tool_calls,
        usage: Usage {
            prompt_tokens: usage.0,
            completion_tokens: usage.1,
            cached: false,
        },
        provider: "canned".into(),
        model: "brain-model".into(),
    }
}

fn call(id: &str, name: &str, arguments: Value) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: name.into(),
        arguments,
    }
}

/// A contract server for `vendor` answering `answers`, expecting [`KEY`].
async fn server(
    vendor: Vendor,
    answers: Vec<agentry_core::Result<ChatResponse>>,
) -> ContractServer {
    let brain = Arc::new(Canned(Mutex::new(answers.into())));
    ContractServer::start(vendor, brain).await.with_api_key(KEY)
}

/// How a test's client is set up.
#[derive(Debug, Clone, Copy)]
struct Setup {
    stream: bool,
    key: &'static str,
    timeout: Duration,
    /// `None`: the config's default.
    read_idle_timeout: Option<Duration>,
}

impl Setup {
    /// [`KEY`], a 5 s timeout, the default stream idle timeout.
    fn new(stream: bool) -> Self {
        Setup {
            stream,
            key: KEY,
            timeout: Duration::from_secs(5),
            read_idle_timeout: None,
        }
    }
}

fn openai_config(server: &ContractServer, setup: Setup) -> OpenAiConfig {
    let mut config = OpenAiConfig::new("openai-test", format!("{}/", server.base_url()), MODEL)
        .with_api_key(setup.key)
        .with_header("HTTP-Referer", "https://agentry.test")
        .with_stream(setup.stream)
        .with_timeout(setup.timeout);
    config.read_idle_timeout = setup.read_idle_timeout.unwrap_or(config.read_idle_timeout);
    config
}

fn anthropic_config(server: &ContractServer, setup: Setup) -> AnthropicConfig {
    let mut config = AnthropicConfig::new("anthropic-test", MODEL)
        .with_base_url(server.base_url())
        .with_api_key(setup.key)
        .with_stream(setup.stream)
        .with_timeout(setup.timeout);
    config.read_idle_timeout = setup.read_idle_timeout.unwrap_or(config.read_idle_timeout);
    config
}

/// A client of `server`'s vendor set up as `setup` says.
fn client_with(server: &ContractServer, setup: Setup) -> Arc<dyn LlmProvider> {
    match server.vendor() {
        Vendor::OpenAi => Arc::new(OpenAiProvider::new(openai_config(server, setup)).unwrap()),
        Vendor::Anthropic => {
            Arc::new(AnthropicProvider::new(anthropic_config(server, setup)).unwrap())
        }
    }
}

/// A client of `server`'s vendor with the default [`Setup`].
fn client(server: &ContractServer, stream: bool) -> Arc<dyn LlmProvider> {
    client_with(server, Setup::new(stream))
}

fn provider_name(vendor: Vendor) -> &'static str {
    match vendor {
        Vendor::OpenAi => "openai-test",
        Vendor::Anthropic => "anthropic-test",
    }
}

fn request(messages: Vec<ChatMessage>) -> ChatRequest {
    ChatRequest {
        model: None,
        messages,
        tools: vec![
            ToolDefinition {
                name: "read_file".into(),
                description: "Reads a file of the repository.".into(),
                parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
            },
            ToolDefinition {
                name: "write_file".into(),
                description: "Writes a file.".into(),
                parameters: json!({"type": "object"}),
            },
        ],
        response_schema: None,
        temperature: Some(0.2),
        max_tokens: Some(1000),
        meta: RequestMeta {
            workflow_id: None,
            role: AgentRole::Developer,
            node: "developer".into(),
            step: 3,
            visit: 0,
            turn: 0,
            request_id: Some(agentry_core::RequestId::new("req-42").unwrap()),
        },
    }
}

fn developer_request(task: &str) -> ChatRequest {
    request(vec![
        ChatMessage::system("You are the developer of a small software team.\nWrite good code."),
        ChatMessage::user(task),
    ])
}

fn assert_class(error: &Error, class: ErrorClass, needle: &str) {
    assert_eq!(error.class(), class, "{error}");
    let text = error.to_string();
    assert!(text.contains(needle), "{text:?} should contain {needle:?}");
    assert!(!text.contains(KEY), "the key leaked: {text}");
}

/// A contract server and a client of it.
struct Session {
    server: ContractServer,
    client: Arc<dyn LlmProvider>,
}

impl Session {
    /// `server` and a client set up as `setup` says.
    fn new(server: ContractServer, setup: Setup) -> Self {
        let client = client_with(&server, setup);
        Session { server, client }
    }

    /// Queues `fault` (if any), sends a developer request and checks the
    /// error it gets with [`assert_class`].
    async fn check_error(&self, fault: Option<Fault>, class: ErrorClass, needle: &str) -> Error {
        if let Some(fault) = fault {
            self.server.push_fault(fault);
        }
        let error = self
            .client
            .complete(&developer_request("Go."))
            .await
            .unwrap_err();
        assert_class(&error, class, needle);
        error
    }
}

#[tokio::test]
async fn plain_and_streamed_completions() {
    let text = "Done: h\u{e9}llo w\u{f6}rld \u{1f600}, the URL shortener is ready for review.";
    for vendor in VENDORS {
        for stream in [false, true] {
            let server = server(vendor, vec![Ok(answer(text, vec![], (31, 17)))]).await;
            let response = client(&server, stream)
                .complete(&developer_request("Build a URL shortener."))
                .await
                .unwrap_or_else(|e| panic!("{vendor:?} stream={stream}: {e}"));
            assert_eq!(
                response,
                ChatResponse {
                    content: text.into(),
                    tool_calls: vec![],
                    usage: Usage {
                        prompt_tokens: 31,
                        completion_tokens: 17,
                        cached: false
                    },
                    provider: provider_name(vendor).into(),
                    model: MODEL.into(),
                    finish_reason: "stop".into(),
                },
                "{vendor:?} stream={stream}"
            );

            let sent = &server.requests()[0];
            assert_eq!(sent.method, "POST");
            assert_eq!(sent.body["model"], MODEL);
            assert_eq!(sent.body["temperature"], json!(0.2));
            match vendor {
                Vendor::OpenAi => {
                    assert_eq!(sent.path, "/v1/chat/completions");
                    assert_eq!(
                        sent.header("authorization"),
                        Some(&*format!("Bearer {KEY}"))
                    );
                    assert_eq!(sent.header("http-referer"), Some("https://agentry.test"));
                    assert_eq!(sent.body["max_tokens"], 1000);
                    if stream {
                        assert_eq!(sent.body["stream_options"], json!({"include_usage": true}));
                    }
                }
                Vendor::Anthropic => {
                    assert_eq!(sent.path, "/v1/messages");
                    assert_eq!(sent.header("x-api-key"), Some(KEY));
                    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
                    assert_eq!(sent.body["max_tokens"], 1000);
                }
            }
            assert_eq!(sent.body.get("stream").is_some(), stream);

            // The server decoded the conversation and inferred its meta.
            let seen = &server.brain_requests()[0];
            assert_eq!(
                seen.messages,
                developer_request("x").messages[..1]
                    .iter()
                    .cloned()
                    .chain([ChatMessage::user("Build a URL shortener.")])
                    .collect::<Vec<_>>()
            );
            assert_eq!(seen.tools, developer_request("x").tools);
            assert_eq!(
                (seen.meta.role, seen.meta.visit, seen.meta.turn),
                (AgentRole::Developer, 0, 0)
            );
        }
    }
}

#[tokio::test]
async fn parallel_tool_calls_then_a_tool_result_follow_up() {
    let calls = vec![
        call(
            "call_1",
            "read_file",
            json!({"path": "src/main.rs", "why": "to see the entry point \u{2192} main()"}),
        ),
        call(
            "call_2",
            "write_file",
            json!({"path": "src/lib.rs", "content": "pub fn shorten(url: &str) -> String {\n    url.into()\n}\n"}),
        ),
    ];
    for vendor in VENDORS {
        for stream in [false, true] {
            let server = server(
                vendor,
                vec![
                    Ok(answer("Reading and writing.", calls.clone(), (50, 40))),
                    Ok(answer("All done.", vec![], (90, 5))),
                ],
            )
            .await;
            let provider = client(&server, stream);
            let mut req = developer_request("Build a URL shortener.");
            let first = provider.complete(&req).await.unwrap();
            assert_eq!(first.tool_calls, calls, "{vendor:?} stream={stream}");
            assert_eq!(first.content, "Reading and writing.");
            assert_eq!(first.finish_reason, "tool_calls");

            req.messages.push(ChatMessage::assistant(
                first.content.clone(),
                first.tool_calls.clone(),
            ));
            req.messages
                .push(ChatMessage::tool_result("call_1", "fn main() {}"));
            req.messages
                .push(ChatMessage::tool_result("call_2", "written"));
            req.meta.turn = 1;
            let second = provider
                .complete(&req)
                .await
                .unwrap_or_else(|e| panic!("{vendor:?} stream={stream}: follow-up rejected: {e}"));
            assert_eq!(second.content, "All done.");

            let seen = &server.brain_requests()[1];
            assert_eq!(seen.meta.turn, 1);
            assert_eq!(seen.meta.visit, 0);
            let results: Vec<_> = seen
                .messages
                .iter()
                .filter_map(|m| m.tool_call_id.as_deref().map(|id| (id, m.content.as_str())))
                .collect();
            assert_eq!(results, [("call_1", "fn main() {}"), ("call_2", "written")]);
            assert_eq!(
                seen.messages
                    .iter()
                    .find(|m| !m.tool_calls.is_empty())
                    .unwrap()
                    .tool_calls,
                calls
            );
        }
    }
}

#[tokio::test]
async fn a_tool_result_for_an_unknown_call_is_rejected_by_the_server() {
    for vendor in VENDORS {
        let server = server(vendor, vec![]).await;
        let mut req = developer_request("Go.");
        req.messages.push(ChatMessage::assistant(
            "",
            vec![call("call_1", "read_file", json!({}))],
        ));
        req.messages.push(ChatMessage::tool_result("call_9", "?"));
        let error = client(&server, false).complete(&req).await.unwrap_err();
        let vendor_says = match vendor {
            Vendor::OpenAi => "must be a response to a preceeding message with 'tool_calls'",
            Vendor::Anthropic => "unexpected `tool_use_id` found in `tool_result` blocks: call_9",
        };
        assert_class(&error, ErrorClass::InvalidInput, vendor_says);
        assert!(error.to_string().contains(provider_name(vendor)), "{error}");
    }
}

#[tokio::test]
async fn visits_are_inferred_per_role_from_the_conversations_seen() {
    for vendor in VENDORS {
        let answers = (0..3).map(|_| Ok(answer("ok", vec![], (1, 1)))).collect();
        let server = server(vendor, answers).await;
        let provider = client(&server, false);
        provider
            .complete(&developer_request("Round one."))
            .await
            .unwrap();
        provider
            .complete(&developer_request("Round two: tests failed."))
            .await
            .unwrap();
        let qa = request(vec![
            ChatMessage::system("You are the QA engineer of a small software team."),
            ChatMessage::user("Test it."),
        ]);
        provider.complete(&qa).await.unwrap();
        let metas: Vec<_> = server
            .brain_requests()
            .iter()
            .map(|r| (r.meta.role, r.meta.visit, r.meta.turn))
            .collect();
        assert_eq!(
            metas,
            [
                (AgentRole::Developer, 0, 0),
                (AgentRole::Developer, 1, 0),
                (AgentRole::Qa, 0, 0)
            ]
        );
    }
}

fn schema() -> OutputSchema {
    OutputSchema {
        name: "DeveloperOutput".into(),
        schema: json!({"type": "object", "required": ["summary"], "properties": {"summary": {"type": "string"}}}),
        layout: Default::default(),
    }
}

#[tokio::test]
async fn openai_structured_output_falls_back_to_instructions_once_rejected() {
    let answers = (0..3)
        .map(|_| Ok(answer("{\"summary\":\"ok\"}", vec![], (5, 5))))
        .collect();
    let server = server(Vendor::OpenAi, answers).await;
    let provider = OpenAiProvider::new(openai_config(&server, Setup::new(false))).unwrap();
    let mut req = developer_request("Summarise.");
    req.response_schema = Some(schema());

    provider.complete(&req).await.unwrap();
    let sent = &server.requests()[0].body;
    assert_eq!(
        sent["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "DeveloperOutput", "schema": schema().schema, "strict": false}})
    );
    assert!(!provider.sends_schema_as_instructions());

    server.push_fault(Fault::RejectResponseFormat);
    let response = provider.complete(&req).await.unwrap();
    assert_eq!(response.content, "{\"summary\":\"ok\"}");
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "one rejected request, one retry");
    assert!(requests[1].body.get("response_format").is_some());
    let retry = &requests[2].body;
    assert!(retry.get("response_format").is_none(), "{retry:#}");
    let system = retry["messages"][0]["content"].as_str().unwrap();
    assert!(system.starts_with("You are the developer"), "{system}");
    assert!(system.contains("Reply with JSON only"), "{system}");
    assert!(system.contains("\"required\":[\"summary\"]"), "{system}");
    assert!(provider.sends_schema_as_instructions());

    // Later calls go straight to instructions.
    provider.complete(&req).await.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 4);
    assert!(requests[3].body.get("response_format").is_none());
}

#[tokio::test]
async fn anthropic_structured_output_goes_in_the_system_prompt() {
    let server = server(
        Vendor::Anthropic,
        vec![Ok(answer("{\"summary\":\"ok\"}", vec![], (5, 5)))],
    )
    .await;
    let mut req = developer_request("Summarise.");
    req.response_schema = Some(schema());
    client(&server, false).complete(&req).await.unwrap();
    let sent = &server.requests()[0].body;
    let system = sent["system"].as_str().unwrap();
    assert!(system.starts_with("You are the developer"), "{system}");
    assert!(system.contains("Reply with JSON only"), "{system}");
}

#[tokio::test]
async fn http_failures_are_classified() {
    use ErrorClass::{Permanent, RateLimited, Transient};
    for vendor in VENDORS {
        let name = provider_name(vendor);
        for stream in [false, true] {
            let server = server(
                vendor,
                vec![
                    Err(Error::transient("GPU on fire")),
                    Err(Error::RateLimited {
                        message: "slow down".into(),
                        retry_after: Some(Duration::from_secs(2)),
                    }),
                ],
            )
            .await;
            let session = Session::new(server, Setup::new(stream));

            let rate_limited = Fault::RateLimited {
                retry_after_secs: 7,
            };
            let error = session
                .check_error(Some(rate_limited), RateLimited, name)
                .await;
            assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
            session
                .check_error(Some(Fault::ServerError), Transient, "HTTP 500")
                .await;
            let malformed = format!("malformed response from {name}");
            session
                .check_error(Some(Fault::Malformed), Permanent, &malformed)
                .await;

            // The brain's own failures, as the vendor reports them (Anthropic: 529).
            let error = session.check_error(None, Transient, "GPU on fire").await;
            let status = match vendor {
                Vendor::OpenAi => "HTTP 500",
                Vendor::Anthropic => "HTTP 529",
            };
            assert_class(&error, Transient, status);
            let error = session.check_error(None, RateLimited, "slow down").await;
            assert_eq!(error.retry_after(), Some(Duration::from_secs(2)));

            let unavailable = Fault::Status {
                status: 503,
                body: "upstream connect error".into(),
                headers: vec![("content-type".into(), "text/plain".into())],
            };
            session
                .check_error(Some(unavailable), Transient, "upstream connect error")
                .await;
        }
    }
}

#[tokio::test]
async fn a_stream_cut_off_halfway_is_transient() {
    for vendor in VENDORS {
        let text = "A long enough answer to cut in half.";
        let server = server(vendor, vec![Ok(answer(text, vec![], (1, 1)))]).await;
        Session::new(server, Setup::new(true))
            .check_error(
                Some(Fault::TruncateStream),
                ErrorClass::Transient,
                "stream ended early",
            )
            .await;
    }
}

#[tokio::test]
async fn a_wrong_key_is_permanent_and_never_shown() {
    for vendor in VENDORS {
        let wrong = "sk-wrong-but-long-secret-9876543210";
        let setup = Setup {
            key: wrong,
            ..Setup::new(false)
        };
        let error = Session::new(server(vendor, vec![]).await, setup)
            .check_error(None, ErrorClass::Permanent, "check the API key")
            .await;
        assert!(!error.to_string().contains(wrong), "{error}");
        assert!(!format!("{error:?}").contains(wrong), "{error:?}");
    }
    let config = OpenAiConfig::new("o", "http://127.0.0.1:1/v1", "m").with_api_key(KEY);
    assert!(!format!("{config:?}").contains(KEY));
    let provider = OpenAiProvider::new(config).unwrap();
    assert!(!format!("{provider:?}").contains(KEY));
}

#[tokio::test]
async fn a_slow_answer_is_a_timeout() {
    for vendor in VENDORS {
        let server = server(vendor, vec![Ok(answer("late", vec![], (1, 1)))]).await;
        let limit = Duration::from_millis(200);
        let setup = Setup {
            timeout: limit,
            ..Setup::new(false)
        };
        let name = provider_name(vendor);
        let started = Instant::now();
        let error = Session::new(server, setup)
            .check_error(
                Some(Fault::Delay(Duration::from_secs(2))),
                ErrorClass::Transient,
                name,
            )
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert!(
            matches!(&error, Error::Timeout { what, after } if *after == limit && what.contains(name)),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn a_stalled_stream_is_a_timeout() {
    for vendor in VENDORS {
        let server = server(vendor, vec![Ok(answer("slowly", vec![], (1, 1)))])
            .await
            .with_frame_pause(Duration::from_millis(400));
        let idle = Duration::from_millis(100);
        let setup = Setup {
            read_idle_timeout: Some(idle),
            ..Setup::new(true)
        };
        let error = Session::new(server, setup)
            .check_error(None, ErrorClass::Transient, "stream")
            .await;
        assert!(
            matches!(&error, Error::Timeout { what, after } if *after == idle && what.contains("stream")),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn connection_refused_is_transient() {
    let config = OpenAiConfig::new("local", "http://127.0.0.1:9/v1", "m");
    let error = OpenAiProvider::new(config)
        .unwrap()
        .complete(&developer_request("Go."))
        .await
        .unwrap_err();
    assert_class(&error, ErrorClass::Transient, "local");
}

const JSON: &str = "application/json";
const SSE: &str = "text/event-stream";

/// What the client must make of a documented example body.
struct Parsed {
    content: &'static str,
    calls: Vec<ToolCall>,
    finish: &'static str,
    model: &'static str,
    /// `(prompt, completion)` tokens; `None` where the body reports none,
    /// so they are estimated (and not zero).
    usage: Option<(u64, u64)>,
}

/// Serves `body` verbatim with `status` and `content_type` (a streaming
/// client for an event stream) and checks what the client made of it: the
/// answer `expected`, or an error of that class whose message contains that
/// text (see [`assert_class`]).
async fn check_fixture(
    vendor: Vendor,
    status: u16,
    content_type: &str,
    body: &str,
    expected: Result<Parsed, (ErrorClass, &str)>,
) {
    let server = server(vendor, vec![]).await;
    server.push_fault(Fault::Raw {
        status,
        content_type: content_type.into(),
        body: body.into(),
    });
    let stream = content_type == SSE;
    let result = client(&server, stream)
        .complete(&developer_request("What's the weather?"))
        .await;
    let (response, expected) = match (result, expected) {
        (Ok(response), Ok(expected)) => (response, expected),
        (Err(error), Err((class, needle))) => return assert_class(&error, class, needle),
        (result, _) => panic!("{vendor:?} {status} {content_type}: unexpected {result:?}"),
    };
    assert_eq!(response.content, expected.content);
    assert_eq!(response.tool_calls, expected.calls);
    assert_eq!(response.finish_reason, expected.finish);
    assert_eq!(response.model, expected.model);
    let usage = (
        response.usage.prompt_tokens,
        response.usage.completion_tokens,
    );
    match expected.usage {
        Some(reported) => assert_eq!(usage, reported),
        None => assert!(usage.0 > 0 && usage.1 > 0, "{:?}", response.usage),
    }
}

#[tokio::test]
async fn documented_openai_examples_parse() {
    let openai = Vendor::OpenAi;
    let completion = Parsed {
        content: "\n\nHello there, how may I assist you today?",
        calls: vec![],
        finish: "stop",
        model: "gpt-4o-mini",
        usage: Some((9, 12)),
    };
    let body = fixtures::OPENAI_CHAT_COMPLETION;
    check_fixture(openai, 200, JSON, body, Ok(completion)).await;

    let tool_calls = Parsed {
        content: "",
        calls: vec![call(
            "call_abc123",
            "get_current_weather",
            json!({"location": "Boston, MA"}),
        )],
        finish: "tool_calls",
        model: "gpt-4o-mini",
        usage: Some((82, 17)),
    };
    let body = fixtures::OPENAI_CHAT_COMPLETION_TOOL_CALLS;
    check_fixture(openai, 200, JSON, body, Ok(tool_calls)).await;

    let chunks = Parsed {
        content: "Hello",
        calls: vec![],
        finish: "stop",
        model: "gpt-4o-mini",
        usage: None,
    };
    let body = fixtures::OPENAI_CHAT_COMPLETION_CHUNKS;
    check_fixture(openai, 200, SSE, body, Ok(chunks)).await;

    let deltas = Parsed {
        content: "",
        calls: vec![call(
            "call_DdmO9pD3xa9XTPNJ32zg2hcA",
            "get_weather",
            json!({"location": "Paris, France"}),
        )],
        finish: "tool_calls",
        model: "gpt-4.1",
        usage: None,
    };
    let body = fixtures::OPENAI_TOOL_CALL_DELTAS;
    check_fixture(openai, 200, SSE, body, Ok(deltas)).await;

    let wrong_key = Err((ErrorClass::Permanent, "Incorrect API key provided"));
    let body = fixtures::OPENAI_ERROR_INVALID_API_KEY;
    check_fixture(openai, 401, JSON, body, wrong_key).await;
}

#[tokio::test]
async fn documented_anthropic_examples_parse() {
    let anthropic = Vendor::Anthropic;
    let message = Parsed {
        content: "Hi! My name is Claude.",
        calls: vec![],
        finish: "stop",
        model: "claude-3-7-sonnet-20250219",
        usage: Some((2095, 503)),
    };
    let body = fixtures::ANTHROPIC_MESSAGE;
    check_fixture(anthropic, 200, JSON, body, Ok(message)).await;

    let tool_use = Parsed {
        content: "<thinking>I need to use the get_weather, and the user wants SF, which is likely San Francisco, CA.</thinking>",
        calls: vec![call(
            "toolu_01A09q90qw90lq917835lq9",
            "get_weather",
            json!({"location": "San Francisco, CA", "unit": "celsius"}),
        )],
        finish: "tool_calls",
        model: "claude-3-5-sonnet-20241022",
        usage: None,
    };
    let body = fixtures::ANTHROPIC_MESSAGE_TOOL_USE;
    check_fixture(anthropic, 200, JSON, body, Ok(tool_use)).await;

    let basic = Parsed {
        content: "Hello!",
        calls: vec![],
        finish: "stop",
        model: "claude-opus-4-6",
        usage: Some((25, 15)),
    };
    let body = fixtures::ANTHROPIC_STREAM_BASIC;
    check_fixture(anthropic, 200, SSE, body, Ok(basic)).await;

    let streamed_tool_use = Parsed {
        content: "Okay, let's check the weather for San Francisco, CA:",
        calls: vec![call(
            "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "get_weather",
            json!({"location": "San Francisco, CA", "unit": "fahrenheit"}),
        )],
        finish: "tool_calls",
        model: "claude-opus-4-6",
        usage: Some((472, 89)),
    };
    let body = fixtures::ANTHROPIC_STREAM_TOOL_USE;
    check_fixture(anthropic, 200, SSE, body, Ok(streamed_tool_use)).await;

    let overloaded = Err((ErrorClass::Transient, "Overloaded"));
    let body = fixtures::ANTHROPIC_STREAM_ERROR;
    check_fixture(anthropic, 200, SSE, body, overloaded).await;

    let not_found = Err((
        ErrorClass::InvalidInput,
        "The requested resource could not be found.",
    ));
    let body = fixtures::ANTHROPIC_ERROR;
    check_fixture(anthropic, 404, JSON, body, not_found).await;
}

#[tokio::test]
async fn the_server_writes_streams_in_small_frames_and_checks_headers() {
    use futures::StreamExt;
    let server = server(
        Vendor::Anthropic,
        vec![Ok(answer("frames", vec![], (1, 1)))],
    )
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/messages", server.base_url());
    let body = json!({"model": "m", "max_tokens": 10, "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]});

    // Without anthropic-version: the vendor's 400.
    let response = http
        .post(&url)
        .header("x-api-key", KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");

    let response = http
        .post(&url)
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let chunks: Vec<_> = response.bytes_stream().map(|c| c.unwrap()).collect().await;
    assert!(chunks.len() > 20, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| c.len() <= 7), "{chunks:?}");
    let text = String::from_utf8(chunks.concat()).unwrap();
    assert!(text.starts_with("event: message_start\n"), "{text}");
    assert!(
        text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        "{text}"
    );
}
