"""A command-line todo list stored in a JSON file."""
