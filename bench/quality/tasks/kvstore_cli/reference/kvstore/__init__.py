"""A key-value store in a JSON file, for shell scripts."""
