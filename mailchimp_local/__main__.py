"""Run the local Mailchimp:

    python -m mailchimp_local --host 127.0.0.1 --port 8765 [--connection-cap 10]
                              [--latency-profile none|realistic] [--seed N] [--state-file PATH]

With --state-file, accounts, credentials and audiences survive a restart, even a `kill -9`: loaded from PATH at start,
saved there (owner-only, atomically) about 0.2 s after the last change and on SIGTERM/SIGINT (persist.py). Without
it, every start is a fresh demo World.
"""
from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from .demo import DEMO_AUDIENCE_ID
from .latency import PROFILES
from .server import LocalMailchimpServer
from .world import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mailchimp_local", description="A local Mailchimp Marketing API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--connection-cap", type=int, default=10,
                        help="simultaneous /3.0 requests per account before 429 (Mailchimp: 10)")
    parser.add_argument("--latency-profile", choices=sorted(PROFILES),
                        default=os.environ.get("MAILCHIMP_LATENCY_PROFILE") or "none",
                        help="default: $MAILCHIMP_LATENCY_PROFILE, else none")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fault generator")
    parser.add_argument("--state-file", type=Path,
                        help="keep accounts, credentials and audiences in this file across restarts (default: none)")
    args = parser.parse_args(argv)
    if args.latency_profile not in PROFILES:
        parser.error(f"MAILCHIMP_LATENCY_PROFILE must be one of {', '.join(PROFILES)}")
    if args.connection_cap < 1:
        parser.error("--connection-cap must be >= 1")
    server = LocalMailchimpServer(args.host, args.port, Settings(args.connection_cap, args.latency_profile, args.seed),
                                  state_file=args.state_file)
    # SIGTERM (`make down`) ends serve_forever like Ctrl-C does, so the state is saved on the way out
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    url = f"http://{args.host}:{server.server_address[1]}"
    print(f"Local Mailchimp on {url} (API root {url}/3.0, admin {url}/__admin/stats)", flush=True)
    # Not the key itself: this output is the stack's .local/logs/mailchimp.log, and no log holds a credential, not
    # even the public demo one (tests/e2e/test_logs.py scans for it)
    print("Demo API key: DEMO_API_KEY in mailchimp_local/demo.py (and its README)", flush=True)
    print(f"Demo audience id: {DEMO_AUDIENCE_ID}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
