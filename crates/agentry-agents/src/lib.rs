//! The five agents: prompts, tools, typed outputs, and the NodeRunner that runs them.
