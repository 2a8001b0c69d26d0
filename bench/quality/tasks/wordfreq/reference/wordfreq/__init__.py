"""Word frequencies of a text."""

from wordfreq.core import count_words, tokenize, top_words
