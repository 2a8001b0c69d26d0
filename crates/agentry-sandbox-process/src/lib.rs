//! Sandbox adapter: tests in a fresh checkout, in a limited subprocess.
