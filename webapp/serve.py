"""``vmemlab serve``: run the browser sandbox (Flask + Flask-SocketIO, threading mode)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

from webapp import ROOT, create_app, socketio
from webapp.lifecycle import shutdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vmemlab serve", description="Serve the virtio-mem browser sandbox.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 in Docker)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    # each limit: flag > environment variable (VMEMLAB_...) > default; SECURITY.md lists them
    parser.add_argument("--max-machines", type=int, metavar="N",
                        help="machines this server runs at most, one per browser session "
                             "(default 40)")
    parser.add_argument("--max-machine-memory", type=int, metavar="MIB",
                        help="largest machine (boot RAM + devices) a form may ask for "
                             "(default 8192 MiB)")
    parser.add_argument("--idle-pause", type=float, metavar="SECONDS",
                        help="pause a machine this long after its last browser left "
                             "(default 120)")
    parser.add_argument("--idle-reclaim", type=float, metavar="SECONDS",
                        help="close a machine this long after its last browser left "
                             "(default 900)")
    parser.add_argument("--max-resident", type=int, metavar="MIB",
                        help="host memory all guests together may hold; nothing grows past "
                             "it (default 8192 MiB; 0: no cap)")
    parser.add_argument("--max-machine-resident", type=int, metavar="MIB",
                        help="host memory one machine's guest may hold; it grows no further "
                             "(default 512 MiB; 0: no cap)")
    parser.add_argument("--share-ttl", type=float, metavar="HOURS",
                        help="shared files expire after this long (default 72 h; 0: never)")
    parser.add_argument("--share-max-total", type=int, metavar="MIB",
                        help="all shared files together (default 1024 MiB)")
    parser.add_argument("--share-dir", metavar="DIR",
                        help="where shared files live (default: <instance path>/shared)")
    parser.add_argument("--rate-limit-machines", metavar="LIMITS",
                        help="new machines per client address "
                             "(default '60 per minute;600 per hour')")
    parser.add_argument("--rate-limit-shares", metavar="LIMITS",
                        help="shares per client address (default '20 per minute;120 per hour')")
    parser.add_argument("--rate-limit-storage", metavar="URI",
                        help="where rate-limit counters live (default memory://; e.g. "
                             "redis://host:6379 to share them between processes)")
    parser.add_argument("--class-token", metavar="TOKEN",
                        help="opening a class (/class/new, the teacher's view) needs this "
                             "token (default: anyone may; VMEMLAB_CLASS_TOKEN)")
    parser.add_argument("--debug", action="store_true", help="Flask debug logging")
    args = parser.parse_args(argv)

    vendor = os.path.join(ROOT, "static", "vendor")
    for name in ("socket.io.min.js", "plotly.min.js"):
        if not os.path.exists(os.path.join(vendor, name)):
            print(f"vmemlab serve: static/vendor/{name} is missing; run `make vendor` "
                  "(npm ci + scripts/vendor.sh)", file=sys.stderr)
            return 1
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO)
    given = {
        "VMEMLAB_MAX_MACHINES": args.max_machines,
        "VMEMLAB_MAX_MACHINE_MEMORY": _mib(args.max_machine_memory),
        "VMEMLAB_IDLE_PAUSE": args.idle_pause,
        "VMEMLAB_IDLE_RECLAIM": args.idle_reclaim,
        "VMEMLAB_MAX_RESIDENT": _mib(args.max_resident),
        "VMEMLAB_MAX_MACHINE_RESIDENT": _mib(args.max_machine_resident),
        "VMEMLAB_SHARE_TTL": None if args.share_ttl is None else args.share_ttl * 3600.0,
        "VMEMLAB_SHARE_MAX_TOTAL": _mib(args.share_max_total),
        "VMEMLAB_SHARE_DIR": args.share_dir,
        "VMEMLAB_RATELIMIT_MACHINES": args.rate_limit_machines,
        "VMEMLAB_RATELIMIT_SHARES": args.rate_limit_shares,
        "VMEMLAB_RATELIMIT_STORAGE_URI": args.rate_limit_storage,
        "VMEMLAB_CLASS_TOKEN": args.class_token,
    }
    app = create_app({key: value for key, value in given.items() if value is not None})
    if not is_loopback(args.host):
        print(f"vmemlab: WARNING: listening on {args.host}: anyone who can reach this "
              "address on the network can use the sandbox (see SECURITY.md)",
              file=sys.stderr, flush=True)
    print(f"vmemlab: serving the sandbox on http://{args.host}:{args.port}/", flush=True)
    try:
        socketio.run(app, host=args.host, port=args.port, debug=False, use_reloader=False,
                     allow_unsafe_werkzeug=True, log_output=args.debug)
    except KeyboardInterrupt:
        pass
    finally:
        shutdown(app)
    return 0


def _mib(value: int | None) -> int | None:
    return None if value is None else value << 20


def is_loopback(host: str) -> bool:
    """Only this machine can connect (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


if __name__ == "__main__":
    raise SystemExit(main())
