"""A command-line expense tracker stored in a JSON file."""
