"""`python3 -m todo [--file PATH] COMMAND ...`"""

import argparse
import json
import os
import sys
from pathlib import Path


def storage_path(option):
    """--file, else $TODO_FILE, else todo.json in the current directory."""
    if option is not None:
        return Path(option)
    return Path(os.environ.get("TODO_FILE", "todo.json"))


def load(path):
    if not path.exists():
        return {"next_id": 1, "tasks": []}
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def save(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")


def find(data, task_id):
    for task in data["tasks"]:
        if task["id"] == task_id:
            return task
    return None


def fail(message):
    print(f"Error: {message}", file=sys.stderr)
    return 1


def build_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--file")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("add").add_argument("title")
    commands.add_parser("list").add_argument("--all", action="store_true")
    commands.add_parser("done").add_argument("id", type=int)
    commands.add_parser("delete").add_argument("id", type=int)
    return parser


def main(argv=None):
    """Runs one command; returns 1 on an error, None on success."""
    args = build_parser().parse_args(argv)
    path = storage_path(args.file)
    data = load(path)
    if args.command == "add":
        title = args.title.strip()
        if not title:
            return fail("title must not be empty")
        task = {"id": data["next_id"], "title": title, "done": False}
        data["tasks"].append(task)
        data["next_id"] += 1
        save(path, data)
        print(f"Added {task['id']}: {title}")
    elif args.command == "list":
        shown = [task for task in data["tasks"] if args.all or not task["done"]]
        if not shown:
            print("No tasks.")
        for task in shown:
            mark = "x" if task["done"] else " "
            print(f"{task['id']} [{mark}] {task['title']}")
    else:
        task = find(data, args.id)
        if task is None:
            return fail(f"no task with id {args.id}")
        if args.command == "done":
            task["done"] = True
            verb = "Completed"
        else:
            data["tasks"].remove(task)
            verb = "Deleted"
        save(path, data)
        print(f"{verb} {task['id']}: {task['title']}")
