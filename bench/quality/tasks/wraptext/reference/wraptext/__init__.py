"""Wrapping, justifying and truncating plain text."""

from wraptext.core import fill, justify, truncate, wrap
