#!/usr/bin/env python3
"""Writes session.toml, the scripted LLM session of the url-shortener demo.

The Python sources the scripted agents "write" live here, so the session can be
regenerated after an edit:  python3 generate.py  (writes session.toml beside it).
`python3 generate.py --check DIR` instead writes the round-1 and round-2 trees
under DIR/round1 and DIR/round2 (code + QA tests), to run them by hand:
    cd DIR/round1 && python3 -m unittest discover -v -s tests -t .   # fails
    cd DIR/round2 && python3 -m unittest discover -v -s tests -t .   # passes
"""
import json
import os
import sys

PYPROJECT = '''[project]
name = "url-shortener"
version = "0.1.0"
description = "A small URL-shortener service (standard library only)."
requires-python = ">=3.9"
'''

INIT = '''"""A small URL shortener: base62 codes, validation, hit counts, an HTTP API."""

from shortener.core import InvalidURL, Shortener, UnknownCode, decode, encode, validate_url

__all__ = ["InvalidURL", "Shortener", "UnknownCode", "decode", "encode", "validate_url"]
'''

CORE_TEMPLATE = '''"""Shortening core: URL validation, base62 codes, storage and hit counts."""

import threading
from urllib.parse import urlparse

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
BASE = len(ALPHABET)
MAX_URL_LENGTH = 2048


class InvalidURL(ValueError):
    """The URL is not an absolute http(s) URL with a host."""


class UnknownCode(KeyError):
    """No URL was shortened to this code."""


def encode(number):
    """Encodes a non-negative integer as a base62 string."""
    if number < 0:
        raise ValueError("cannot encode a negative number")
    if number == 0:
        return ALPHABET[0]
    digits = []
    while number:
        number, rest = divmod(number, BASE)
        digits.append(ALPHABET[rest])
    return "".join(reversed(digits))


def decode(code):
    """Decodes a base62 string; raises UnknownCode for other characters."""
    if not code:
        raise UnknownCode(code)
    number = 0
    for char in code:
        index = ALPHABET.find(char)
        if index < 0:
            raise UnknownCode(code)
        number = number * BASE + index
    return number


def validate_url(url):
    """Returns the URL when it is valid, else raises InvalidURL."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidURL("the URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidURL("the URL is longer than %d characters" % MAX_URL_LENGTH)
    if any(c.isspace() for c in url):
        raise InvalidURL("the URL contains whitespace")
    parts = urlparse(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidURL("only http and https URLs are accepted")
    if not parts.netloc or not parts.hostname:
        raise InvalidURL("the URL has no host")
    return url


class Shortener:
    """Thread-safe in-memory store of URLs by code, with hit counts."""

    def __init__(self):
        self._lock = threading.Lock()
        self._urls = []  # the URL with id N is at index N - 1
        self._codes = {}  # url -> code
        self._hits = {}  # code -> hits

    def shorten(self, url):
        """Returns the code of a URL, making one on first use."""
        validate_url(url)
        with self._lock:
            if url in self._codes:
                return self._codes[url]
@ASSIGN_ID@
            code = encode(ident)
            self._codes[url] = code
            self._hits[code] = 0
            return code

    def _index(self, code):
        index = decode(code) - 1
        if index < 0 or index >= len(self._urls):
            raise UnknownCode(code)
        return index

    def resolve(self, code):
        """Returns the URL of a code and counts one hit."""
        with self._lock:
            url = self._urls[self._index(code)]
            self._hits[code] = self._hits.get(code, 0) + 1
            return url

    def hits(self, code):
        """Returns how many times a code was resolved."""
        with self._lock:
            self._index(code)
            return self._hits.get(code, 0)

    def stats(self, code):
        """Returns the code, its URL and its hits."""
        with self._lock:
            url = self._urls[self._index(code)]
            return {"code": code, "url": url, "hits": self._hits.get(code, 0)}
'''

# Round 1: the id is taken BEFORE the URL is stored, so ids start at 0 while
# `_index` expects them to start at 1: the first URL cannot be resolved and
# every later code resolves to the URL shortened before it.
BUGGY_ASSIGN = '''            ident = len(self._urls)
            self._urls.append(url)'''
FIXED_ASSIGN = '''            self._urls.append(url)
            ident = len(self._urls)  # ids start at 1, matching _index'''

CORE_V1 = CORE_TEMPLATE.replace("@ASSIGN_ID@", BUGGY_ASSIGN)
CORE_V2 = CORE_TEMPLATE.replace("@ASSIGN_ID@", FIXED_ASSIGN)

SERVER = '''"""HTTP API on http.server: POST /shorten, GET /<code>, GET /stats/<code>."""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from shortener.core import InvalidURL, Shortener, UnknownCode

MAX_BODY = 16 * 1024


def handle(shortener, method, path, body=b""):
    """Routes one request; returns (status, headers, body bytes).

    Kept free of sockets so it can be tested directly.
    """
    if method == "POST" and path == "/shorten":
        try:
            payload = json.loads(body.decode("utf-8") or "{}")
        except (UnicodeDecodeError, ValueError):
            return _json(400, {"error": "the body is not JSON"})
        url = payload.get("url") if isinstance(payload, dict) else None
        try:
            code = shortener.shorten(url)
        except InvalidURL as error:
            return _json(400, {"error": str(error)})
        return _json(201, {"code": code, "url": url})
    if method == "GET" and path.startswith("/stats/"):
        try:
            return _json(200, shortener.stats(path[len("/stats/"):]))
        except UnknownCode:
            return _json(404, {"error": "unknown code"})
    if method == "GET" and len(path) > 1 and "/" not in path[1:]:
        try:
            url = shortener.resolve(path[1:])
        except UnknownCode:
            return _json(404, {"error": "unknown code"})
        return 302, {"Location": url}, b""
    return _json(404, {"error": "not found"})


def _json(status, value):
    return status, {"Content-Type": "application/json"}, json.dumps(value).encode("utf-8")


def make_handler(shortener):
    """A request handler class bound to one Shortener."""

    class Handler(BaseHTTPRequestHandler):
        def _send(self, method, body=b""):
            status, headers, payload = handle(shortener, method, self.path, body)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self):
            self._send("GET")

        def do_POST(self):
            length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
            self._send("POST", self.rfile.read(length))

        def log_message(self, format, *args):
            pass

    return Handler


def serve(host="0.0.0.0", port=None):
    """Serves until interrupted."""
    port = int(port or os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer((host, port), make_handler(Shortener()))
    print("url-shortener listening on %s:%d" % (host, port))
    server.serve_forever()
'''

MAIN = '''"""Runs the service: python3 -m shortener (port from $PORT, default 8080)."""

from shortener.server import serve

if __name__ == "__main__":
    serve()
'''

TEST_CORE = '''import unittest

from shortener.core import InvalidURL, Shortener, decode, encode, validate_url


class Base62Test(unittest.TestCase):
    def test_known_values(self):
        self.assertEqual(encode(0), "0")
        self.assertEqual(encode(61), "Z")
        self.assertEqual(encode(62), "10")

    def test_round_trip(self):
        for n in range(0, 5000, 7):
            self.assertEqual(decode(encode(n)), n)


class ValidationTest(unittest.TestCase):
    def test_accepts_http_and_https(self):
        for url in ("http://example.com", "https://example.com/a?b=c"):
            self.assertEqual(validate_url(url), url)

    def test_rejects_bad_urls(self):
        for url in ("", "   ", "ftp://example.com", "example.com", "http://", "http://a b.com", None):
            with self.assertRaises(InvalidURL):
                validate_url(url)


class ShortenTest(unittest.TestCase):
    def test_same_url_same_code(self):
        s = Shortener()
        self.assertEqual(s.shorten("https://example.com"), s.shorten("https://example.com"))

    def test_different_urls_different_codes(self):
        s = Shortener()
        self.assertNotEqual(s.shorten("https://a.example"), s.shorten("https://b.example"))


if __name__ == "__main__":
    unittest.main()
'''

TEST_SERVER = '''import json
import unittest

from shortener.core import Shortener
from shortener.server import handle


class ShortenEndpointTest(unittest.TestCase):
    def test_shorten_returns_201_and_a_code(self):
        status, headers, body = handle(Shortener(), "POST", "/shorten", b'{"url": "https://example.com"}')
        self.assertEqual(status, 201)
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertTrue(json.loads(body)["code"])

    def test_invalid_body_is_400(self):
        self.assertEqual(handle(Shortener(), "POST", "/shorten", b"not json")[0], 400)
        self.assertEqual(handle(Shortener(), "POST", "/shorten", b'{"url": "ftp://x"}')[0], 400)

    def test_unknown_route_is_404(self):
        self.assertEqual(handle(Shortener(), "DELETE", "/x")[0], 404)


if __name__ == "__main__":
    unittest.main()
'''

ACCEPTANCE = '''"""Acceptance tests: one test per acceptance criterion of the stories."""

import json
import unittest

from shortener.core import InvalidURL, Shortener, UnknownCode
from shortener.server import handle


def post(shortener, url):
    status, _, body = handle(shortener, "POST", "/shorten", json.dumps({"url": url}).encode())
    return status, json.loads(body)


class ShortenAndResolveTest(unittest.TestCase):
    def test_each_code_resolves_to_its_own_url(self):
        s = Shortener()
        urls = ["https://a.example/one", "https://b.example/two", "https://c.example/three"]
        codes = [s.shorten(u) for u in urls]
        self.assertEqual(len(set(codes)), 3)
        for code, url in zip(codes, urls):
            self.assertEqual(s.resolve(code), url)

    def test_resolve_redirects_over_http(self):
        s = Shortener()
        status, body = post(s, "https://example.com/page")
        self.assertEqual(status, 201)
        status, headers, _ = handle(s, "GET", "/" + body["code"])
        self.assertEqual(status, 302)
        self.assertEqual(headers["Location"], "https://example.com/page")

    def test_same_url_gets_same_code(self):
        s = Shortener()
        self.assertEqual(post(s, "https://x.example")[1]["code"], post(s, "https://x.example")[1]["code"])

    def test_unknown_code_is_404(self):
        s = Shortener()
        s.shorten("https://example.com")
        self.assertEqual(handle(s, "GET", "/zzzz")[0], 404)
        with self.assertRaises(UnknownCode):
            s.resolve("zzzz")


class ValidationTest(unittest.TestCase):
    def test_invalid_urls_are_rejected_with_400(self):
        s = Shortener()
        for url in ["", "javascript:alert(1)", "ftp://example.com/file", "https://", "http://" + "a" * 2050 + ".com"]:
            status, body = post(s, url)
            self.assertEqual(status, 400, url)
            self.assertIn("error", body)
        with self.assertRaises(InvalidURL):
            s.shorten("not a url")


class HitCountTest(unittest.TestCase):
    def test_every_resolve_counts_one_hit(self):
        s = Shortener()
        first = s.shorten("https://first.example")
        code = s.shorten("https://second.example")
        for _ in range(3):
            handle(s, "GET", "/" + code)
        s.resolve(first)
        status, _, body = handle(s, "GET", "/stats/" + code)
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body), {"code": code, "url": "https://second.example", "hits": 3})
        self.assertEqual(s.hits(first), 1)


if __name__ == "__main__":
    unittest.main()
'''

CI = '''stages:
  - test
  - build

test:
  stage: test
  image: python:3.12-slim
  script:
    - python3 -m unittest discover -v -s tests -t .

build-image:
  stage: build
  image: docker:27
  services:
    - docker:27-dind
  script:
    - docker build -t "$CI_REGISTRY_IMAGE:$CI_COMMIT_SHORT_SHA" .
  rules:
    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
'''

DOCKERFILE = '''FROM python:3.12-slim
WORKDIR /app
COPY shortener/ shortener/
RUN useradd --create-home --uid 10001 app
USER app
ENV PORT=8080
EXPOSE 8080
CMD ["python3", "-m", "shortener"]
'''

DEPLOYMENT = '''apiVersion: apps/v1
kind: Deployment
metadata:
  name: url-shortener
  labels: {app: url-shortener}
spec:
  replicas: 1  # state is in memory: one replica
  selector:
    matchLabels: {app: url-shortener}
  template:
    metadata:
      labels: {app: url-shortener}
    spec:
      containers:
        - name: url-shortener
          image: registry.example.com/url-shortener:latest
          ports:
            - containerPort: 8080
          env:
            - {name: PORT, value: "8080"}
          readinessProbe:
            tcpSocket: {port: 8080}
          resources:
            requests: {cpu: 50m, memory: 64Mi}
            limits: {cpu: 250m, memory: 128Mi}
---
apiVersion: v1
kind: Service
metadata:
  name: url-shortener
spec:
  selector: {app: url-shortener}
  ports:
    - port: 80
      targetPort: 8080
'''

ANALYSIS = {
    "summary": "A small in-memory URL-shortener HTTP service (Python standard library only): shorten URLs to base62 codes, redirect codes to their URLs, reject invalid URLs and count hits.",
    "project_key": "URL",
    "project_name": "URL Shortener",
    "repository": "url-shortener",
    "epics": [{
        "title": "URL shortening service",
        "description": "Shorten, resolve and count hits of URLs over a small HTTP API.",
        "stories": [
            {
                "title": "Shorten a URL",
                "description": "As an API client, I want to shorten a long URL to a short code, so that I can share a compact link.",
                "acceptance_criteria": [
                    "POST /shorten with a valid URL returns 201 and a base62 code",
                    "Shortening the same URL twice returns the same code",
                    "Different URLs get different codes",
                ],
                "tasks": ["Base62 encoding", "In-memory store"],
            },
            {
                "title": "Resolve a code",
                "description": "As a visitor, I want a short link to take me to the original URL, so that short links work like the long ones.",
                "acceptance_criteria": [
                    "GET /<code> redirects with 302 to the URL the code was made for",
                    "Every code resolves to its own URL, including the first one shortened",
                    "An unknown code returns 404",
                ],
            },
            {
                "title": "Reject invalid URLs",
                "description": "As the operator, I want only absolute http(s) URLs accepted, so that the service cannot be used for other schemes or junk.",
                "acceptance_criteria": [
                    "Empty, relative, non-http(s) or host-less URLs return 400 with an error message",
                    "URLs longer than 2048 characters return 400",
                ],
            },
            {
                "title": "Count hits",
                "description": "As a link owner, I want to see how often my link was used, so that I can measure its reach.",
                "acceptance_criteria": [
                    "Every successful resolve counts one hit for that code only",
                    "GET /stats/<code> returns the code, its URL and its hit count",
                ],
            },
        ],
    }],
}

DEV_V1 = {
    "summary": "Package `shortener`: base62 codes, URL validation, a thread-safe in-memory store with hit counts, and an http.server API.",
    "design": "shortener/core.py holds encode/decode, validate_url and Shortener (ids -> base62 codes; a lock guards the store). shortener/server.py routes requests in a socket-free handle() function, wrapped by a BaseHTTPRequestHandler; python3 -m shortener serves on $PORT.",
    "language": "python",
    "files": [
        {"path": "pyproject.toml", "content": PYPROJECT},
        {"path": "shortener/__init__.py", "content": INIT},
        {"path": "shortener/__main__.py", "content": MAIN},
        {"path": "shortener/server.py", "content": SERVER},
        {"path": "tests/__init__.py", "content": ""},
        {"path": "tests/test_core.py", "content": TEST_CORE},
        {"path": "tests/test_server.py", "content": TEST_SERVER},
    ],
    "commit_message": "Add URL shortener: base62 codes, validation, hit counts, HTTP API",
}

DEV_V2 = {
    "summary": "Fix code assignment: ids now start at 1 as _index expects, so every code resolves to its own URL.",
    "design": "Shortener.shorten stores the URL first and then takes its 1-based id; unchanged elsewhere.",
    "language": "python",
    "files": [{"path": "shortener/core.py", "content": CORE_V2}],
    "commit_message": "Fix off-by-one in code assignment: codes resolved to the previous URL",
}

QA = {
    "test_plan": "## Test plan\n\nAcceptance tests through the public API (`Shortener` and the socket-free `handle` router), one per criterion:\n\n1. Shorten: 201 and a code; same URL -> same code; different URLs -> different codes.\n2. Resolve: every code resolves to its own URL (first one included); 302 with `Location`; unknown code -> 404.\n3. Validation: empty, `javascript:`, `ftp:`, host-less and over-long URLs -> 400 with an error.\n4. Hits: each resolve counts one hit for its code only; `/stats/<code>` reports them.",
    "test_files": [
        {"path": "tests/acceptance/__init__.py", "content": ""},
        {"path": "tests/acceptance/test_acceptance.py", "content": ACCEPTANCE},
    ],
    "focus": ["resolve returns the right URL", "validation", "hit counting", "HTTP status codes"],
}

DOCS = {"pages": [
    {"title": "URL Shortener", "parent": None, "body": "# URL Shortener\n\nA small HTTP service that shortens URLs to base62 codes, redirects codes to their URLs, rejects invalid URLs and counts hits. Python standard library only; data is kept in memory.\n\n- [Architecture](Architecture)\n- [API](API)\n- [Operations](Operations)\n"},
    {"title": "Architecture", "parent": "URL Shortener", "body": "# Architecture\n\n- `shortener/core.py`: `encode`/`decode` (base62), `validate_url`, and `Shortener`, a lock-guarded in-memory store. A URL's id is its 1-based position; its code is `encode(id)`. Hits are counted per code.\n- `shortener/server.py`: `handle(shortener, method, path, body)` routes requests without sockets; `make_handler` wraps it in an `http.server` handler; `serve()` runs a `ThreadingHTTPServer`.\n- Tests: unit tests in `tests/`, acceptance tests in `tests/acceptance/`, run with `python3 -m unittest discover -s tests -t .`.\n"},
    {"title": "API", "parent": "URL Shortener", "body": "# API\n\n| Method | Path | Result |\n|---|---|---|\n| POST | `/shorten` body `{\"url\": ...}` | `201 {\"code\", \"url\"}`; `400 {\"error\"}` for an invalid URL |\n| GET | `/<code>` | `302` with `Location`; `404` for an unknown code |\n| GET | `/stats/<code>` | `200 {\"code\", \"url\", \"hits\"}`; `404` for an unknown code |\n\nValid URLs are absolute `http`/`https` URLs with a host, at most 2048 characters.\n"},
    {"title": "Operations", "parent": "URL Shortener", "body": "# Operations\n\n- Run: `python3 -m shortener` (port from `PORT`, default 8080).\n- Container: `docker build -t url-shortener .` then `docker run -p 8080:8080 url-shortener`.\n- Kubernetes: `kubectl apply -f deploy/deployment.yaml` (one replica: state is in memory).\n- CI: `.gitlab-ci.yml` runs the tests on every push and builds the image on the default branch.\n"},
]}

PIPELINE = {
    "files": [
        {"path": ".gitlab-ci.yml", "content": CI},
        {"path": "Dockerfile", "content": DOCKERFILE},
        {"path": "deploy/deployment.yaml", "content": DEPLOYMENT},
    ],
    "notes": "CI runs `python3 -m unittest discover` (unit + acceptance tests); the image runs `python3 -m shortener` as a non-root user on port 8080; the deployment keeps one replica because the store is in memory.",
}


def literal(text):
    if "'''" in text:
        raise SystemExit("text contains ''' and cannot be a TOML literal string")
    return "'''\n" + text + "'''"


def response(role, content=None, visit=None, turn=None, calls=()):
    out = ["[[responses]]", 'role = "%s"' % role]
    if visit is not None:
        out.append("visit = %d" % visit)
    if turn is not None:
        out.append("turn = %d" % turn)
    if content is not None:
        out.append("content = " + literal(json.dumps(content, indent=2)))
    for name, args in calls:
        out.append("[[responses.tool_calls]]")
        out.append('name = "%s"' % name)
        out.append("[responses.tool_calls.arguments]")
        for key, value in args.items():
            out.append("%s = %s" % (key, literal(value) if "\n" in value else json.dumps(value)))
    return "\n".join(out) + "\n"


def session():
    parts = [
        "# Scripted LLM session of the url-shortener demo. GENERATED by generate.py: edit that, then run it.\n"
        "# Storyline: analysis -> code with an off-by-one bug -> QA fails for real -> fix -> QA passes\n"
        "# -> documentation and CI. Responses are chosen by role, visit and turn only.\n"
        'name = "url-shortener demo"\n',
        response("business_analyst", turn=0, calls=[("list_issues", {"project": "URL"})]),
        response("business_analyst", ANALYSIS, turn=1),
        response("developer", visit=0, turn=0, calls=[("write_file", {"path": "shortener/core.py", "content": CORE_V1})]),
        response("developer", DEV_V1, visit=0, turn=1),
        response("developer", visit=1, turn=0, calls=[("read_file", {"path": "shortener/core.py"})]),
        response("developer", DEV_V2, visit=1, turn=1),
        response("qa", turn=0, calls=[("list_files", {})]),
        response("qa", QA, turn=1),
        response("technical_writer", DOCS),
        response("devops", PIPELINE),
    ]
    return "\n".join(parts)


def write_tree(root, files):
    for path, content in files.items():
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(content)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        base = {f["path"]: f["content"] for f in DEV_V1["files"]}
        base["shortener/core.py"] = CORE_V1
        tests = {f["path"]: f["content"] for f in QA["test_files"]}
        write_tree(os.path.join(sys.argv[2], "round1"), {**base, **tests})
        write_tree(os.path.join(sys.argv[2], "round2"), {**base, "shortener/core.py": CORE_V2, **tests})
        return
    with open(os.path.join(here, "session.toml"), "w") as f:
        f.write(session())


if __name__ == "__main__":
    main()
