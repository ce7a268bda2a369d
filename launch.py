"""Start the daemon in the foreground: pick the port (SPEC §2), then serve with uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import random
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from config import daemon_record, permissions
from config.settings import (
    ConfigError,
    ensure_api_token,
    ensure_home,
    load_settings,
    local_url,
    resolve_home,
    update_config,
)

PORT_RANGE = range(8100, 8201)
# ComfyUI's default port; the daemon runs beside it, so never take it by chance.
AVOID_PORTS = {8188}
EXIT_USAGE = 2
# The port the daemon picked for itself: when it is busy at a later start, the daemon may pick
# again (saying so); a port a person set in config.json or --port is never changed.
PICKED_PORT_FILE = "picked_port"

log = logging.getLogger("civitai.launch")


class PortError(Exception):
    """No port can be bound; the message says which and what to do."""


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def open_port(host: str, port: int | None, source: str) -> socket.socket:
    """Bind `port` on `host`, or a random free port of 8100–8200 when `port` is None.

    Binding here (not after a check) leaves no gap in which another program could take it.
    """
    if port is not None:
        try:
            return _bind(host, port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortError(
                    f"Port {port} ({source}) is already in use by another program. Stop that "
                    f"program, start with --port N, or set active_port in config.json to another "
                    f"port (null picks a free one in 8100-8200)."
                ) from None
            raise PortError(f"Cannot listen on {host}:{port} ({source}): {exc.strerror}") from None
    candidates = [p for p in PORT_RANGE if p not in AVOID_PORTS]
    random.shuffle(candidates)
    for candidate in candidates:
        try:
            return _bind(host, candidate)
        except OSError:
            continue
    raise PortError(
        f"No free port in {PORT_RANGE.start}-{PORT_RANGE.stop - 1} on {host}. Free one, or set "
        f"active_port in config.json (or pass --port N) to a free port outside that range."
    )


def picked_port(data_dir: Path) -> int | None:
    """The port this daemon last picked for itself (not one a person set), if any."""
    try:
        return int((data_dir / PICKED_PORT_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def remember_picked_port(data_dir: Path, port: int) -> None:
    try:
        (data_dir / PICKED_PORT_FILE).write_text(f"{port}\n")
    except OSError as exc:  # only a later start's convenience is lost
        log.warning("cannot note the picked port in %s: %s", data_dir, exc.strerror)


def gui_url(host: str, port: int) -> str:
    return f"{local_url(host, port)}/gui"


class Server(uvicorn.Server):
    """uvicorn, but a SIGTERM/SIGINT ends in a clean exit 0 instead of being re-raised."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the Civitai download daemon.")
    parser.add_argument("--home", help="folder for config, manifest, data and logs")
    parser.add_argument("--host", help="address to bind (default: host in config.json)")
    parser.add_argument("--port", type=int, help="port (default: active_port, else random)")
    parser.add_argument(
        "--check", action="store_true", help="create the home where missing, check config, exit"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    # SIGHUP (`systemctl reload`) reads config.json again once the app has started (live.py);
    # before that, and while it stops, it must not end the daemon as the default action would.
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    args = parse_args(argv)
    home = resolve_home(args.home)
    try:
        ensure_home(home)
        settings = load_settings(home)
        permissions.mend_home(home, settings.models_dir)  # a home of an older daemon too
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"error: cannot use home {home}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.check:
        print(f"config OK: {settings.config_path}")
        return 0
    if args.host:
        settings = settings.model_copy(update={"host": args.host})
    if args.port is not None and not 1 <= args.port <= 65535:
        print(f"error: --port {args.port} is not a port (1-65535)", file=sys.stderr)
        return EXIT_USAGE

    port, source = args.port, "--port"
    if port is None:
        port, source = settings.active_port, f"active_port in {settings.config_path}"
    try:
        sock = open_port(settings.host, port, source)
    except PortError as exc:
        if args.port is not None or port is None or port != picked_port(settings.data_dir):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        # A port the daemon once picked for itself is no promise to anyone: pick another, aloud.
        try:
            sock = open_port(settings.host, None, "")
        except PortError as again:
            print(f"error: {again}", file=sys.stderr)
            return EXIT_USAGE
        print(
            f"note: port {port}, which this daemon picked at an earlier start, is now in use by "
            f"another program; listening on {sock.getsockname()[1]} instead (active_port in "
            f"{settings.config_path} updated)",
            file=sys.stderr,
            flush=True,
        )
        port = None
    bound = sock.getsockname()[1]
    if port is None:
        update_config(home, active_port=bound)
        remember_picked_port(settings.data_dir, bound)
    first = settings.api_token is None  # the key is made now: say how to log in without it
    settings = ensure_api_token(settings.model_copy(update={"active_port": bound}))

    from logger import setup_logging
    from main import create_app

    setup_logging(settings.logs_dir, settings.log_level, settings.secret_values())
    # A weak key in config.json was put there on this machine: said at each start, not refused,
    # so that a home keeps starting; PATCH /api/settings refuses one (live.prepare_patch).
    for weak in settings.weak_keys():
        print(f"warning: {settings.config_path}: {weak}", file=sys.stderr, flush=True)
        log.warning("%s: %s", settings.config_path, weak)
    # No sys.setswitchinterval: since transfers left the event loop (transfer.py), a 0.5 ms GIL
    # switch interval no longer pays. 1 GiB, one connection, 4 interleaved rounds (medians):
    # 0.5 ms 2.80 s wall / 2.13 s CPU, Python's default 5 ms 2.50 s / 1.84 s (curl 1.94 s).
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=3,
        root_path=settings.root_path,
        ws_ping_interval=20,
    )
    server = Server(config)
    # Before the GUI line: whoever waits for that line can already find the daemon by its home.
    daemon_record.write(home, settings.host, bound)
    try:
        print(f"GUI: {gui_url(settings.host, bound)}", flush=True)
        if first and settings.api_token:
            from web.sessions import first_start_link

            key = settings.api_token.get_secret_value()
            print(first_start_link(home, key, gui_url(settings.host, bound)), flush=True)
        log.info("listening on %s:%s, home %s", settings.host, bound, home)
        server.run(sockets=[sock])
    finally:
        daemon_record.remove(home)
    return 0


if __name__ == "__main__":
    sys.exit(main())
