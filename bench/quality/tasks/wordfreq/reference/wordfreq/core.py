"""Tokenizing and counting."""

import re

RUN = re.compile(r"[a-z0-9']+")


def tokenize(text):
    words = []
    for run in RUN.findall(text.lower()):
        word = run.strip("'")
        if word:
            words.append(word)
    return words


def count_words(text, stopwords=()):
    skip = {word.lower() for word in stopwords}
    counts = {}
    for word in tokenize(text):
        if word not in skip:
            counts[word] = counts.get(word, 0) + 1
    return counts


def top_words(text, n=10, stopwords=()):
    if n < 1:
        raise ValueError("n must be at least 1")
    ranked = sorted(count_words(text, stopwords).items(), key=lambda item: (-item[1], item[0]))
    return ranked[:n]
