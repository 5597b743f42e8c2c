"""`telemetrypulse` console script: the Faust app's commands plus `simulate`, `migrate`, `api`, `sink`, `notify`.
(The local stack is the dev kit's: `python -m devkit`, which the Makefile calls.)"""

from __future__ import annotations

import sys

from telemetrypulse.exceptions import SettingsError


def _migrate(argv: list[str]) -> int:
    from telemetrypulse import db
    from telemetrypulse.settings import get_settings

    applied = db.migrate_sync(get_settings().dsn)
    print(f"migrations applied: {', '.join(applied) if applied else 'none pending'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else ""
    try:
        if command == "simulate":
            from telemetrypulse.simulator import main as simulate

            return simulate(args[1:])
        if command == "api":
            from telemetrypulse.api.main import serve

            return serve(args[1:])
        if command == "notify":
            from telemetrypulse.notify.service import main as notify

            return notify(args[1:])
        if command == "migrate":
            return _migrate(args[1:])
        if command == "sink":
            from telemetrypulse.sink.service import main as sink

            return sink(args[1:])
        from telemetrypulse.app import app

        sys.argv = ["telemetrypulse", *args]
        app.main()
        return 0
    except SettingsError as e:
        print(f"telemetrypulse: configuration error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
