//! Scripted LlmProvider: replays a script of responses per role, visit and turn.
