"""`python -m devhost --app function_app ...`: run a function app locally (see devhost/README.md)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from devhost.blob_events import parse_route
from devhost.errors import ConfigError
from devhost.host import HostOptions, run


KEY_VARIABLE = "DEVHOST_FUNCTION_KEY"  # the function key, passed where `ps` does not show it


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def parse_args(argv: list[str]) -> HostOptions:
    parser = argparse.ArgumentParser(prog="python -m devhost", description="Run an Azure Functions Python v2 app locally.")
    parser.add_argument("--app", default="function_app", help="module holding the func.FunctionApp (default function_app)")
    parser.add_argument("--root", type=Path, default=Path.cwd(),
                        help="app root: host.json, import path, .local/ state (default: current directory)")
    parser.add_argument("--settings", type=Path,
                        help="local.settings.json to load (default: ROOT/local.settings.json when present)")
    parser.add_argument("--port", type=int, default=7071, help="HTTP port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--function-key", help="key FUNCTION and ADMIN routes require (x-functions-key or ?code=); "
                                               f"anyone can read it in `ps`: prefer --function-key-file or ${KEY_VARIABLE}")
    parser.add_argument("--function-key-file", type=Path, help="read the function key from this (owner-only) file")
    parser.add_argument("--auth-tokens", type=Path, metavar="PATH",
                        help='bearer tokens App Service Authentication accepts: an owner-only JSON file '
                             '{"<token>": {"id", "name", "email", "roles": [...], "kind": "user"|"app"}}')
    parser.add_argument("--no-auth", action="store_true",
                        help="run without App Service Authentication (WEBSITE_AUTH_ENABLED unset, headers unfiltered), "
                             "as an app deployed without it would be")
    parser.add_argument("--message-lease-seconds", type=_positive_int, default=600,
                        help="how long a received queue message stays invisible, renewed while it runs (default 600)")
    parser.add_argument("--blob-events", action="append", default=[], metavar="CONTAINER=QUEUE",
                        help="announce blobs written to CONTAINER as Event Grid BlobCreated events on QUEUE (repeatable)")
    parser.add_argument("--state-file", type=Path,
                        help="where timer status and announced blobs are kept (default ROOT/.local/devhost-state.json)")
    parser.add_argument("--shutdown-seconds", type=float, default=10.0,
                        help="on SIGTERM/SIGINT, how long running functions may finish (default 10)")
    args = parser.parse_args(argv)
    key = os.environ.pop(KEY_VARIABLE, None) or None  # popped: the app's own code never sees it in os.environ
    if args.function_key_file is not None:
        try:
            key = args.function_key_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            parser.error(f"--function-key-file: {error.strerror}: {args.function_key_file}")
    key = args.function_key or key
    if args.no_auth and args.auth_tokens:
        parser.error("--auth-tokens needs App Service Authentication: drop --no-auth")
    try:
        routes = tuple(parse_route(text) for text in args.blob_events)
    except ConfigError as error:
        parser.error(str(error))
    return HostOptions(app=args.app, root=args.root.resolve(), settings=args.settings, port=args.port,
                       function_key=key, lease_seconds=args.message_lease_seconds,
                       blob_events=routes, shutdown_seconds=args.shutdown_seconds, state_file=args.state_file,
                       auth=not args.no_auth, auth_tokens=args.auth_tokens)


def main(argv: list[str]) -> int:
    options = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)  # its INFO lines list every storage request
    try:
        run(options)
    except ConfigError as error:
        print(f"devhost: {error}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
