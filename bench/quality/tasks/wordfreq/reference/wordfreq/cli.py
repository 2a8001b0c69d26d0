"""`python3 -m wordfreq FILE [-n N] [--stopwords FILE]`"""

import argparse
import sys
from pathlib import Path

from wordfreq.core import top_words


def fail(message):
    print(f"Error: {message}", file=sys.stderr)
    return 1


def read(path):
    """The file's text, or None when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def main(argv=None):
    """Prints the most common words; returns 1 on an error, None on success."""
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("-n", type=int, default=10)
    parser.add_argument("--stopwords")
    args = parser.parse_args(argv)
    if args.n < 1:
        return fail("n must be at least 1")
    text = read(args.file)
    if text is None:
        return fail(f"cannot read {args.file}")
    stopwords = []
    if args.stopwords is not None:
        listed = read(args.stopwords)
        if listed is None:
            return fail(f"cannot read {args.stopwords}")
        stopwords = listed.split()
    for word, count in top_words(text, args.n, stopwords):
        print(f"{word} {count}")
