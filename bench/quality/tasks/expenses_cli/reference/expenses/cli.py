"""`python3 -m expenses [--db PATH] COMMAND ...`"""

import argparse
import json
import os
import re
import sys
from pathlib import Path

AMOUNT = re.compile(r"(\d+)(?:\.(\d{1,2}))?")


def parse_cents(text):
    """'12.5' -> 1250; None when the text is not a valid positive amount."""
    match = AMOUNT.fullmatch(text)
    if match is None:
        return None
    whole, fraction = match.groups()
    cents = int(whole) * 100 + int((fraction or "").ljust(2, "0"))
    if cents > 0:
        return cents
    return None


def money(cents):
    return f"{cents // 100}.{cents % 100:02d}"


def storage_path(option):
    if option is not None:
        return Path(option)
    return Path(os.environ.get("EXPENSES_DB", "expenses.json"))


def load(path):
    if not path.exists():
        return {"next_id": 1, "expenses": []}
    return json.loads(path.read_text(encoding="utf-8"))


def save(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")


def fail(message):
    print(f"Error: {message}", file=sys.stderr)
    return 1


def matching(data, category):
    if category is None:
        return data["expenses"]
    wanted = category.strip().lower()
    return [e for e in data["expenses"] if e["category"] == wanted]


def build_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--db")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add")
    add.add_argument("amount")
    add.add_argument("category")
    add.add_argument("--note", default="")
    commands.add_parser("list").add_argument("--category")
    commands.add_parser("total").add_argument("--category")
    commands.add_parser("summary")
    commands.add_parser("remove").add_argument("id", type=int)
    return parser


def main(argv=None):
    """Runs one command; returns 1 on an error, None on success."""
    args = build_parser().parse_args(argv)
    path = storage_path(args.db)
    data = load(path)
    if args.command == "add":
        cents = parse_cents(args.amount)
        if cents is None:
            return fail(f"invalid amount: {args.amount}")
        category = args.category.strip().lower()
        if not category:
            return fail("category must not be empty")
        expense = {"id": data["next_id"], "cents": cents, "category": category, "note": args.note}
        data["expenses"].append(expense)
        data["next_id"] += 1
        save(path, data)
        print(f"Added {expense['id']}: {money(cents)} {category}")
    elif args.command == "list":
        shown = matching(data, args.category)
        if not shown:
            print("No expenses.")
        for e in shown:
            print(" ".join(filter(None, [str(e["id"]), money(e["cents"]), e["category"], e["note"]])))
    elif args.command == "total":
        print(f"Total: {money(sum(e['cents'] for e in matching(data, args.category)))}")
    elif args.command == "summary":
        totals = {}
        for e in data["expenses"]:
            totals[e["category"]] = totals.get(e["category"], 0) + e["cents"]
        if not totals:
            print("No expenses.")
        for category, cents in sorted(totals.items(), key=lambda item: (-item[1], item[0])):
            print(f"{category}: {money(cents)}")
    else:
        found = [e for e in data["expenses"] if e["id"] == args.id]
        if not found:
            return fail(f"no expense with id {args.id}")
        data["expenses"].remove(found[0])
        save(path, data)
        print(f"Removed {args.id}: {money(found[0]['cents'])} {found[0]['category']}")
