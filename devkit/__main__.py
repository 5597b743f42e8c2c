"""`python -m devkit up|down|status|run|with-stack -- CMD…`: the local stack, what the Makefile calls
(`make up`, `make down`, `make run`, and `make test`/`make bench` through `with-stack`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from devkit.errors import StackError
from devkit.local_stack import LocalStack
from devkit.supervisor import run_system, with_stack


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devkit",
        description="The local stack: Apache Kafka (KRaft) and PostgreSQL 15, no Docker.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start (or reuse) Kafka and PostgreSQL, write .devstack/env")
    sub.add_parser("down", help="stop what `up` recorded")
    sub.add_parser("status", help="show what runs; exit 0 when all is up")
    sub.add_parser(
        "run", help="`make run`: stack + migrate + worker, sink, API, notifier, simulator until Ctrl-C"
    )
    w = sub.add_parser("with-stack", help="run a command with the stack up, then stop what this started")
    w.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    s = LocalStack()
    try:
        if args.command == "up":
            s.up()
        elif args.command == "down":
            s.down()
        elif args.command == "status":
            return 0 if s.status() else 1
        elif args.command == "run":
            return run_system(s)
        else:
            command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            return with_stack(s, command)
    except StackError as e:
        print(f"devstack: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
