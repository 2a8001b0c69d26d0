"""`python3 -m kvstore [--store PATH] COMMAND ...`"""

import argparse
import json
import os
import re
import sys
from pathlib import Path

KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
INTEGER = re.compile(r"-?[0-9]+")


def storage_path(option):
    if option is not None:
        return Path(option)
    return Path(os.environ.get("KVSTORE_PATH", "kvstore.json"))


def load(path):
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def save(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")


def fail(message):
    print(f"Error: {message}", file=sys.stderr)
    return 1


def build_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--store")
    commands = parser.add_subparsers(dest="command", required=True)
    set_ = commands.add_parser("set")
    set_.add_argument("key")
    set_.add_argument("value")
    get = commands.add_parser("get")
    get.add_argument("key")
    get.add_argument("--default")
    commands.add_parser("delete").add_argument("key")
    commands.add_parser("keys").add_argument("--prefix", default="")
    commands.add_parser("count")
    incr = commands.add_parser("incr")
    incr.add_argument("key")
    incr.add_argument("--by", type=int, default=1)
    return parser


def main(argv=None):
    """Runs one command; returns 1 on an error, None on success."""
    args = build_parser().parse_args(argv)
    path = storage_path(args.store)
    data = load(path)
    if args.command == "count":
        print(len(data))
        return None
    if args.command == "keys":
        for key in sorted(data):
            if key.startswith(args.prefix):
                print(key)
        return None
    key = args.key
    if KEY.fullmatch(key) is None:
        return fail(f"invalid key: {key}")
    if args.command == "set":
        data[key] = args.value
    elif args.command == "incr":
        value = data.get(key, "0")
        if INTEGER.fullmatch(value) is None:
            return fail(f"not an integer: {key}")
        data[key] = str(int(value) + args.by)
        print(data[key])
    elif key not in data:
        if args.command == "get" and args.default is not None:
            print(args.default)
            return None
        return fail(f"key not found: {key}")
    elif args.command == "get":
        print(data[key])
        return None
    else:
        del data[key]
    save(path, data)
    return None
