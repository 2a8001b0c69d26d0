"""The engine benchmark's workload on LangGraph, for a same-machine comparison.

Shape (identical to `agentry bench engine`): 7 node runs per workflow,
business -> developer -> qa -> developer -> qa -> technical_writer -> devops,
each node writing ~2 KB into the state's agent outputs, a checkpoint after
every step, nodes doing nothing but an optional sleep.

Savers (`--saver`):
- `sqlite` (default): LangGraph's SqliteSaver on a temporary file, WAL,
  SQLite's default synchronous=FULL.
- `postgres`: LangGraph's PostgresSaver (sync API, psycopg 3) on a connection
  pool of `--concurrency` connections, in a schema of the run's own
  (`lg_bench_*`, dropped afterwards) at `--database-url`; `setup()` runs once
  before timing.

Usage: python3 bench/langgraph_shape.py --workflows 500 [--concurrency 1] [--latency-ms 0]
       [--durability sync|async|exit] [--saver sqlite|postgres]
       [--database-url postgresql://postgres@127.0.0.1:5432/test]
Needs: pip install langgraph langgraph-checkpoint-sqlite langgraph-checkpoint-postgres \
       "psycopg[binary,pool]"
Prints one JSON line with the same field names as the Agentry benchmark, plus
`saver`.
"""
import argparse
import json
import operator
import os
import resource
import sqlite3
import statistics
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
import time
from typing import Annotated, TypedDict

from langgraph.graph import END, StateGraph

PAYLOAD = "x" * 2000


class State(TypedDict):
    requirements: str
    agent_outputs: Annotated[dict, operator.or_]
    qa_rounds: int


def make_node(name, latency_s):
    def node(state: State):
        if latency_s:
            time.sleep(latency_s)
        update = {"agent_outputs": {f"{name}.{state.get('qa_rounds', 0)}": {"text": PAYLOAD}}}
        if name == "qa":
            update["qa_rounds"] = state.get("qa_rounds", 0) + 1
        return update

    return node


def build(latency_s, saver):
    g = StateGraph(State)
    for n in ["business", "developer", "qa", "technical_writer", "devops"]:
        g.add_node(n, make_node(n, latency_s))
    g.set_entry_point("business")
    g.add_edge("business", "developer")
    g.add_edge("developer", "qa")
    g.add_conditional_edges(
        "qa", lambda s: "developer" if s["qa_rounds"] < 2 else "technical_writer"
    )
    g.add_edge("technical_writer", "devops")
    g.add_edge("devops", END)
    return g.compile(checkpointer=saver)


@contextmanager
def sqlite_saver(args):
    """A SqliteSaver on a fresh file; yields the saver, the durability fields
    and a function giving the store's size in bytes."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "lg.db")
    conn = sqlite3.connect(path, check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    fields = {
        "journal_mode": mode,
        "synchronous": {0: "off", 1: "normal", 2: "full", 3: "extra"}.get(sync, sync),
    }

    def size():
        return sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp))

    yield saver, fields, size


@contextmanager
def postgres_saver(args):
    """A PostgresSaver on a pool of `--concurrency` connections whose
    search_path is a schema of this run's own, dropped on the way out."""
    import psycopg
    from psycopg import sql
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool
    from langgraph.checkpoint.postgres import PostgresSaver

    schema = f"lg_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(args.database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            pool = ConnectionPool(
                args.database_url,
                min_size=args.concurrency,
                max_size=args.concurrency,
                kwargs={
                    # As PostgresSaver.from_conn_string sets them.
                    "autocommit": True,
                    "prepare_threshold": 0,
                    "row_factory": dict_row,
                    "options": f"-c search_path={schema}",
                },
                open=True,
            )
            try:
                pool.wait()
                saver = PostgresSaver(pool)
                saver.setup()
                sync = admin.execute("SHOW synchronous_commit").fetchone()[0]
                fields = {"journal_mode": None, "synchronous": sync}

                def size():
                    return admin.execute(
                        "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint"
                        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                        " WHERE n.nspname = %s AND c.relkind IN ('r', 'm')",
                        (schema,),
                    ).fetchone()[0]

                yield saver, fields, size
            finally:
                pool.close()
        finally:
            admin.execute(
                sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema))
            )


SAVERS = {"sqlite": sqlite_saver, "postgres": postgres_saver}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workflows", type=int, default=200)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument(
        "--durability",
        choices=["sync", "async", "exit"],
        default="sync",
        help="LangGraph's checkpoint durability; `sync` (commit before the next step) "
        "matches Agentry's commit-before-dispatch; LangGraph's own default is `async`",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="workflows in flight at once (threads sharing the one saver)",
    )
    p.add_argument(
        "--saver",
        choices=sorted(SAVERS),
        default="sqlite",
        help="LangGraph's checkpointer: SqliteSaver on a temporary file, or PostgresSaver "
        "in a schema of the run's own at --database-url",
    )
    p.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="the PostgreSQL database for --saver postgres",
    )
    args = p.parse_args()
    with SAVERS[args.saver](args) as (saver, fields, size):
        run(args, saver, fields, size)


def run(args, saver, fields, store_size):
    app = build(args.latency_ms / 1000.0, saver)
    def one(i):
        s = time.perf_counter()
        out = app.invoke(
            {"requirements": "bench", "agent_outputs": {}, "qa_rounds": 0},
            {"configurable": {"thread_id": f"wf-{i}"}},
            durability=args.durability,
        )
        return (time.perf_counter() - s) * 1000, len(out["agent_outputs"])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        results = list(pool.map(one, range(args.workflows)))
    latencies = [r[0] for r in results]
    steps = sum(r[1] for r in results)
    wall = time.perf_counter() - t0
    node_time = args.latency_ms / 1000.0 * steps / args.concurrency
    size = store_size()
    latencies.sort()
    print(json.dumps({
        "engine": "langgraph",
        "saver": args.saver,
        "durability": args.durability,
        "journal_mode": fields["journal_mode"],
        "synchronous": fields["synchronous"],
        "workflows": args.workflows,
        "concurrency": args.concurrency,
        "steps": steps,
        "wall_s": round(wall, 3),
        "workflows_per_s": round(args.workflows / wall, 1),
        "steps_per_s": round(steps / wall, 1),
        "overhead_us_per_step": round((wall - node_time) / steps * 1e6, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "store_bytes_per_workflow": size // args.workflows,
    }))


if __name__ == "__main__":
    main()
