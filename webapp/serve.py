"""``vmemlab serve``: run the browser sandbox (Flask + Flask-SocketIO, threading mode)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from webapp import ROOT, create_app, socketio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vmemlab serve", description="Serve the virtio-mem browser sandbox.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 in Docker)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    parser.add_argument("--max-machines", type=int, default=40,
                        help="machines this server runs at most (one per browser session)")
    parser.add_argument("--max-machine-memory", type=int, default=8192, metavar="MIB",
                        help="largest machine (boot RAM + devices) a form may ask for, in MiB")
    parser.add_argument("--idle-pause", type=float, default=120.0, metavar="SECONDS",
                        help="pause a machine this long after its last browser left")
    parser.add_argument("--idle-reclaim", type=float, default=900.0, metavar="SECONDS",
                        help="close a machine this long after its last browser left")
    parser.add_argument("--debug", action="store_true", help="Flask debug logging")
    args = parser.parse_args(argv)

    vendor = os.path.join(ROOT, "static", "vendor")
    for name in ("socket.io.min.js", "plotly.min.js"):
        if not os.path.exists(os.path.join(vendor, name)):
            print(f"vmemlab serve: static/vendor/{name} is missing; run `make vendor` "
                  "(npm ci + scripts/vendor.sh)", file=sys.stderr)
            return 1
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO)
    app = create_app({
        "VMEMLAB_MAX_MACHINES": args.max_machines,
        "VMEMLAB_MAX_MACHINE_MEMORY": args.max_machine_memory << 20,
        "VMEMLAB_IDLE_PAUSE": args.idle_pause,
        "VMEMLAB_IDLE_RECLAIM": args.idle_reclaim,
    })
    print(f"vmemlab: serving the sandbox on http://{args.host}:{args.port}/", flush=True)
    try:
        socketio.run(app, host=args.host, port=args.port, debug=False, use_reloader=False,
                     allow_unsafe_werkzeug=True, log_output=args.debug)
    except KeyboardInterrupt:
        pass
    finally:
        app.extensions["vmemlab"].close_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
