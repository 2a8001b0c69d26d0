//! `agentry models` and the local model as the default LLM, on the real
//! binary. The corruption test copies the real model (from the cache that
//! `scripts/test` fills with `agentry models pull`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

use support::*;

const FILE: &str = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf";

/// The model cache the suite pulled into.
fn pulled_model() -> PathBuf {
    let dir = std::env::var_os("AGENTRY_MODEL_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("agentry/models"))
        })
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/agentry/models")
        });
    let path = dir.join(FILE);
    assert!(
        path.is_file(),
        "the model must be pulled before the suite runs (scripts/test does): {}",
        path.display()
    );
    path
}

#[test]
fn run_without_the_model_names_the_command_that_fetches_it() {
    let data = tempdir();
    let models = tempdir();
    let out = run(agentry(data.path())
        .env("AGENTRY_MODEL_DIR", models.path())
        .args(["run", "a command-line todo app in Python"]));
    assert_fails_with(&out, "run `agentry models pull`");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not downloaded"), "{stderr}");

    let out = run(agentry(data.path())
        .env("AGENTRY_MODEL_DIR", models.path())
        .args(["--json", "models", "list"]));
    assert_ok(&out);
    let list = stdout_json(&out);
    assert_eq!(list[0]["state"], "missing", "{list:#}");
    assert_eq!(list[0]["sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn models_verify_detects_a_corrupted_model_file() {
    let data = tempdir();
    let models = tempdir();
    let copy = models.path().join(FILE);
    fs::copy(pulled_model(), &copy).unwrap();
    let verify = || {
        run(agentry(data.path())
            .env("AGENTRY_MODEL_DIR", models.path())
            .args(["models", "verify"]))
    };
    let out = verify();
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok (SHA-256 cc324af0"));

    // One flipped bit in the middle of the weights.
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&copy)
        .unwrap();
    file.seek(SeekFrom::Start(600_000_000)).unwrap();
    let mut byte = [0u8; 1];
    std::io::Read::read_exact(&mut file, &mut byte).unwrap();
    file.seek(SeekFrom::Start(600_000_000)).unwrap();
    file.write_all(&[byte[0] ^ 0x10]).unwrap();
    drop(file);
    let out = verify();
    assert_fails_with(&out, "is corrupt: its SHA-256 is");
    assert_fails_with(&out, "run `agentry models pull --force`");

    let out = run(agentry(data.path())
        .env("AGENTRY_MODEL_DIR", models.path())
        .args(["--json", "models", "list"]));
    assert_eq!(stdout_json(&out)[0]["state"], "unverified");
    // A run refuses the corrupt file before loading it.
    let out = run(agentry(data.path())
        .env("AGENTRY_MODEL_DIR", models.path())
        .args(["run", "a todo app"]));
    assert_fails_with(&out, "is corrupt");

    // A truncated file is caught by its size alone.
    fs::write(&copy, b"GGUF").unwrap();
    let out = verify();
    assert_fails_with(&out, "4 bytes, expected 1117320768");
}
