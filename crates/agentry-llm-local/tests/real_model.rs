//! The local provider on the real model (Qwen2.5-Coder 1.5B, from the
//! model cache; `scripts/test` pulls it first). Short prompts and small
//! token caps keep each call to seconds. The tests share one loaded model
//! and run one at a time (`.config/nextest.toml`, group `local-model`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use agentry_core::{
    AgentRole, ChatMessage, ChatRequest, LlmObserver, LlmProgress, LlmProvider, OutputSchema,
    RequestMeta, ToolDefinition,
};
use agentry_llm_local::{LocalConfig, LocalProvider, ModelCache, DEFAULT_MODEL};
use serde_json::{json, Value};

/// Records what the provider reports.
#[derive(Default)]
struct Recorder {
    text: Mutex<String>,
    prompt: Mutex<Vec<(u64, u64)>>,
}

impl LlmObserver for Recorder {
    fn on_progress(&self, _meta: &RequestMeta, progress: LlmProgress<'_>) {
        match progress {
            LlmProgress::Prompt { done, total } => self.prompt.lock().unwrap().push((done, total)),
            LlmProgress::Tokens { text, .. } => self.text.lock().unwrap().push_str(text),
        }
    }
}

fn provider() -> (Arc<LocalProvider>, Arc<Recorder>) {
    static SHARED: OnceLock<(Arc<LocalProvider>, Arc<Recorder>)> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let cache = ModelCache::new(ModelCache::default_dir());
            let path = cache.ready(DEFAULT_MODEL).unwrap_or_else(|e| {
                panic!("the local model must be in the cache for these tests: {e:#}")
            });
            let mut config = LocalConfig::new(DEFAULT_MODEL.name, path);
            config.threads = Some(2);
            let recorder = Arc::new(Recorder::default());
            let provider = LocalProvider::new(config).with_observer(recorder.clone());
            (Arc::new(provider), recorder)
        })
        .clone()
}

fn request(system: &str, user: &str) -> ChatRequest {
    ChatRequest {
        model: None,
        messages: vec![ChatMessage::system(system), ChatMessage::user(user)],
        tools: Vec::new(),
        response_schema: None,
        temperature: Some(0.0),
        max_tokens: Some(16),
        meta: RequestMeta {
            workflow_id: None,
            role: AgentRole::Developer,
            node: "test".into(),
            step: 0,
            visit: 0,
            turn: 0,
            request_id: None,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_streams_and_stops_at_the_cap() {
    let (llm, recorder) = provider();
    recorder.text.lock().unwrap().clear();
    let response = llm
        .complete(&request(
            "You are a terse assistant.",
            "What is the capital of France? One word.",
        ))
        .await
        .unwrap();
    assert_eq!(response.provider, "local");
    assert_eq!(response.model, DEFAULT_MODEL.name);
    assert!(response.content.contains("Paris"), "{response:?}");
    assert_eq!(response.finish_reason, "stop");
    assert!(response.usage.prompt_tokens > 10, "{:?}", response.usage);
    assert!(response.usage.completion_tokens >= 1);
    assert_eq!(
        recorder.text.lock().unwrap().trim(),
        response.content,
        "the streamed tokens are the answer"
    );

    let mut long = request(
        "You are a storyteller.",
        "Tell a long story about a lighthouse keeper.",
    );
    long.max_tokens = Some(5);
    let response = llm.complete(&long).await.unwrap();
    assert_eq!(response.finish_reason, "length");
    assert_eq!(response.usage.completion_tokens, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constrained_answers_validate_against_their_schema() {
    let (llm, _) = provider();
    let schema = json!({
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 40},
            "priority": {"type": "string", "enum": ["low", "medium", "high"]},
            "points": {"type": "integer", "minimum": 1, "maximum": 8},
            "criteria": {"type": "array", "items": {"type": "string", "maxLength": 60},
                         "minItems": 1, "maxItems": 2}
        },
        "required": ["title", "priority", "points", "criteria"],
        "additionalProperties": false
    });
    let mut req = request(
        "You write user stories.",
        // Asks for the wrong shape on purpose: the grammar must win.
        "Write a user story for a login page. Answer in YAML with a field `story`.",
    );
    req.response_schema = Some(OutputSchema {
        name: "Story".into(),
        schema: schema.clone(),
        layout: Default::default(),
    });
    req.max_tokens = Some(120);
    let response = llm.complete(&req).await.unwrap();
    assert_eq!(response.finish_reason, "stop", "{response:?}");
    let value: Value = serde_json::from_str(&response.content)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", response.content));
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?} in {value}");

    // The repair round repeats the answer: its tokens are reused, so
    // only the new turn is processed.
    let (_, recorder) = provider();
    recorder.prompt.lock().unwrap().clear();
    req.messages
        .push(ChatMessage::assistant(response.content.clone(), Vec::new()));
    req.messages
        .push(ChatMessage::user("Make the title shorter."));
    let again = llm.complete(&req).await.unwrap();
    let processed = recorder
        .prompt
        .lock()
        .unwrap()
        .last()
        .map(|(_, total)| *total)
        .unwrap();
    assert!(
        processed < again.usage.prompt_tokens / 2,
        "processed {processed} of {} prompt tokens",
        again.usage.prompt_tokens
    );
    let value: Value = serde_json::from_str(&again.content).unwrap();
    assert!(validator.is_valid(&value), "{value}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_follow_the_constrained_protocol() {
    let (llm, _) = provider();
    let mut req = request(
        "You are a developer. You know nothing about the repository: always call a tool first.",
        "What does README.md say? Call read_file on it.",
    );
    req.tools = vec![ToolDefinition {
        name: "read_file".into(),
        description: "Reads a file of the repository.".into(),
        parameters: json!({
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "required": ["path"],
            "additionalProperties": false
        }),
    }];
    req.response_schema = Some(OutputSchema {
        name: "Answer".into(),
        schema: json!({"type": "object", "properties": {"summary": {"type": "string"}},
                       "required": ["summary"], "additionalProperties": false}),
        layout: Default::default(),
    });
    req.max_tokens = Some(60);
    let response = llm.complete(&req).await.unwrap();
    assert_eq!(response.finish_reason, "tool_calls", "{response:?}");
    assert_eq!(response.tool_calls.len(), 1, "{response:?}");
    assert_eq!(response.tool_calls[0].name, "read_file");
    assert_eq!(
        response.tool_calls[0].arguments,
        json!({"path": "README.md"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_stops_and_the_model_serves_the_next() {
    let (llm, _) = provider();
    let mut long = request("You are a storyteller.", "Tell a very long story.");
    long.max_tokens = Some(2000);
    let timed_out = tokio::time::timeout(Duration::from_millis(1500), llm.complete(&long)).await;
    assert!(timed_out.is_err(), "a 2000-token story takes longer");
    let response = llm
        .complete(&request("You are terse.", "Say hi."))
        .await
        .unwrap();
    assert!(!response.content.is_empty());
}

/// Our forward pass (grouped-query attention, a growing in-place
/// key-value cache) gives candle's `quantized_qwen2` answers.
///
/// - A prompt fed in chunks, one of which outgrows the first cache buffer
///   (512 positions): the same logits (the same arithmetic, in fact).
/// - Token by token after it: the same next token and nearly the same
///   distribution. Not the same logits: a one-row product quantizes its
///   activations to 8 bits, which turns the last-bit differences of a
///   differently ordered attention sum into logit differences of about
///   0.3, as large as those between candle's own one-token and chunked
///   paths (total variation 0.006–0.04 in both cases).
/// - After the cache is cleared: the same logits again.
#[test]
fn forward_pass_matches_candle_quantized_qwen2() {
    use agentry_llm_local::qwen2::Qwen2;
    use candle_core::quantized::gguf_file;
    use candle_core::{Device, Tensor};
    use candle_transformers::models::quantized_qwen2::ModelWeights;

    let path = ModelCache::new(ModelCache::default_dir())
        .ready(DEFAULT_MODEL)
        .unwrap();
    let device = Device::Cpu;
    let open = || {
        let mut file = std::fs::File::open(&path).unwrap();
        let content = gguf_file::Content::read(&mut file).unwrap();
        (content, file)
    };
    let (content, mut file) = open();
    let mut reference = ModelWeights::from_gguf(content, &mut file, &device).unwrap();
    let (content, mut file) = open();
    let mut ours = Qwen2::from_gguf(content, &mut file, &device).unwrap();

    let values = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|x, y| x.1.total_cmp(y.1))
            .map(|(i, _)| i)
    };
    let same_logits = |what: &str, a: &Tensor, b: &Tensor| {
        let (a, b) = (values(a), values(b));
        assert_eq!(a.len(), b.len(), "{what}: vocabulary sizes differ");
        let scale = a.iter().fold(1f32, |m, x| m.max(x.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            worst <= 1e-3 * scale,
            "{what}: logits differ by {worst} (largest logit {scale})"
        );
    };
    let same_choice = |what: &str, a: &Tensor, b: &Tensor| {
        let (a, b) = (values(a), values(b));
        assert_eq!(argmax(&a), argmax(&b), "{what}: a different next token");
        let probabilities = |v: &[f32]| {
            let top = v.iter().copied().fold(f32::MIN, f32::max);
            let e: Vec<f32> = v.iter().map(|x| (x - top).exp()).collect();
            let sum: f32 = e.iter().sum();
            e.into_iter().map(|x| x / sum).collect::<Vec<f32>>()
        };
        let (p, q) = (probabilities(&a), probabilities(&b));
        let distance = p.iter().zip(&q).map(|(x, y)| (x - y).abs()).sum::<f32>() / 2.0;
        assert!(
            distance <= 0.1,
            "{what}: next-token distributions differ (total variation {distance})"
        );
    };
    let input = |tokens: &[u32]| Tensor::new(tokens, &device).unwrap().unsqueeze(0).unwrap();

    // 520 tokens in chunks of 256, 256 and 8: the third chunk grows our
    // cache past its first 512 positions.
    let prompt: Vec<u32> = (0..520u32).map(|i| (i * 7_919 + 13) % 150_000).collect();
    let mut position = 0;
    for chunk in prompt.chunks(256) {
        let want = reference.forward(&input(chunk), position).unwrap();
        let got = ours.forward(&input(chunk), position).unwrap();
        same_logits(&format!("prompt chunk at {position}"), &want, &got);
        position += chunk.len();
    }
    for token in [42u32, 1_000, 77] {
        let want = reference.forward(&input(&[token]), position).unwrap();
        let got = ours.forward(&input(&[token]), position).unwrap();
        same_choice(&format!("token at {position}"), &want, &got);
        position += 1;
    }
    reference.clear_kv_cache();
    ours.clear_kv_cache();
    let fresh = [9_707u32, 11, 1_879, 374, 264, 1_273];
    let want = reference.forward(&input(&fresh), 0).unwrap();
    let got = ours.forward(&input(&fresh), 0).unwrap();
    same_logits("after clearing the cache", &want, &got);
    let want = reference.forward(&input(&[13]), fresh.len()).unwrap();
    let got = ours.forward(&input(&[13]), fresh.len()).unwrap();
    same_logits("one token on a short context", &want, &got);
}
