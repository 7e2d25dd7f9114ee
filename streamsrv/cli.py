"""The ``streamsrv`` command: serve | analyze | events | validate-config."""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streamsrv.config import AppConfig, load_config
from streamsrv.config.models import CAMERA_ID_PATTERN
from streamsrv.errors import StreamsrvError
from streamsrv.events.model import EVENT_TYPES
from streamsrv.logs import setup_logging

log = logging.getLogger("streamsrv")


def _load(path: str | None) -> AppConfig:
    return load_config(path) if path else AppConfig()


def cmd_serve(args: argparse.Namespace) -> int:
    from setproctitle import setproctitle

    from streamsrv.config.exposure import check_exposure

    cfg = _load(args.config)
    if args.host:
        cfg.server.host = args.host
    if args.port is not None:
        cfg.server.port = args.port
    warning = check_exposure(cfg.server)  # before anything heavy is imported: a refused server exits at once
    # Each command imports what it runs, so `events` and `validate-config` start quickly and never load torch.
    from streamsrv.api.app import HttpServer, create_app

    setup_logging(cfg.server.log_level, cfg.server.log_json)
    setproctitle("streamsrv: api")  # `ps` tells the server from its decoders and inference process
    if warning:
        log.warning("%s", warning)
    app = create_app(cfg, config_path=Path(args.config) if args.config else None)
    log.info("streamsrv serving on http://%s:%d with %d camera(s)", cfg.server.host, cfg.server.port, len(cfg.cameras))
    # uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal. With Python's defaults
    # that kills the process before finalizers run (exit 143, "leaked semaphore" warnings); a no-op handler
    # lets the re-raise return, so the server exits 0 after a clean shutdown.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    node = app.state.cluster
    if node is not None:
        node.check_clash()  # a live node with this id: refuse to start (exit 2), naming the clash
    # HttpServer ends the endless responses itself; the bound is for requests that are slow to finish.
    http = HttpServer(
        app, host=cfg.server.host, port=cfg.server.port, log_config=None, access_log=False, timeout_graceful_shutdown=5
    )
    if node is not None:
        node.on_fatal = lambda _: setattr(http, "should_exit", True)
    http.run()
    return 2 if node is not None and node.fatal else 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from streamsrv.analyze import Analyzer, write_jsonl

    cfg = _load(args.config)
    setup_logging("warning", False)
    if args.model:
        cfg.model.path = args.model
    camera = next((c for c in cfg.cameras if c.id == args.camera), None) if args.camera else None
    if args.camera and camera is None:
        raise StreamsrvError(f"--camera {args.camera!r} is not in {args.config}")
    analyzer = Analyzer(cfg)
    progress = tqdm(desc=f"analyze {Path(args.video).name}", unit="frame", disable=args.quiet, file=sys.stderr)

    def counted(records: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for record in records:
            if record["type"] == "frame":
                progress.total = analyzer.total_frames
                progress.update()
            yield record

    records = counted(
        analyzer.records(args.video, camera=camera, detect_fps=args.detect_fps, motion_gating=not args.no_motion_gating)
    )
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            summary = write_jsonl(records, out)
    else:
        summary = write_jsonl(records, sys.stdout)
    progress.close()
    if args.out and not args.quiet:
        print(json.dumps(summary), file=sys.stderr)
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    import contextlib
    import os

    from streamsrv.events.client import follow_bus, follow_sse
    from streamsrv.events.redis_bus import RedisBus

    if args.camera is not None and not re.fullmatch(CAMERA_ID_PATTERN, args.camera):
        raise StreamsrvError(f"--camera {args.camera!r} is not a camera id (letters, digits, '_', '.', '-')")
    for name in ("replay", "max_events"):
        if (getattr(args, name) or 0) < 0:
            raise StreamsrvError(f"--{name.replace('_', '-')} must be 0 or more")
    cfg = _load(args.config)
    setup_logging("warning", False)
    filters: dict[str, Any] = {"camera_id": args.camera, "type": args.type, "replay": args.replay}
    with contextlib.ExitStack() as stack:
        if args.url is None and cfg.events.redis_url:
            bus = stack.enter_context(contextlib.closing(RedisBus(cfg.events.redis_url)))
            events = follow_bus(bus, **filters)
        else:
            url = args.url or f"http://{cfg.server.host}:{cfg.server.port}"
            config_key = cfg.server.api_key.get_secret_value() if cfg.server.api_key else None
            api_key = args.api_key or os.environ.get("STREAMSRV_API_KEY") or config_key
            events = follow_sse(url, api_key=api_key, **filters)
        stack.enter_context(contextlib.closing(events))
        for n, event in enumerate(events, start=1):
            print(event.to_json(), flush=True)
            if n == args.max_events:
                break
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    print(f"{args.config}: OK ({len(cfg.cameras)} camera(s))")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamsrv", description="Multi-camera streaming video analytics server.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the live server")
    s.add_argument("--config", "-c", help="YAML config file")
    s.add_argument("--host", help="override server.host")
    s.add_argument("--port", type=int, help="override server.port")
    s.set_defaults(func=cmd_serve)

    a = sub.add_parser("analyze", help="run the pipeline over a recorded file as fast as possible")
    a.add_argument("video", help="video file")
    a.add_argument("--config", "-c", help="YAML config (model, inference, tracker, cameras' rules)")
    a.add_argument("--model", "-m", help="override model.path")
    a.add_argument("--camera", help="apply this configured camera's rules and settings")
    a.add_argument("--detect-fps", type=float, help="process only this many frames/s (default: every frame)")
    a.add_argument(
        "--no-motion-gating",
        action="store_true",
        help="run the detector on every frame (default: skip frames without motion, as a live camera would)",
    )
    a.add_argument("--out", "-o", help="write JSON lines here (default: stdout)")
    a.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    a.set_defaults(func=cmd_analyze)

    e = sub.add_parser(
        "events",
        help="print events as JSON lines, live",
        description="Follow events from Redis (when the config sets events.redis_url) or from a running server's "
        "event stream (--url, or the config's server address).",
    )
    e.add_argument("--config", "-c", help="YAML config (events.redis_url, server address and api_key)")
    e.add_argument("--url", help="server to follow, e.g. http://127.0.0.1:8080 (instead of Redis)")
    e.add_argument("--api-key", help="the server's API key (default: $STREAMSRV_API_KEY, else the config's)")
    e.add_argument("--camera", help="only this camera's events")
    e.add_argument("--type", choices=EVENT_TYPES, help="only events of this type")
    e.add_argument("--replay", type=int, default=0, help="first print the newest N matching events")
    e.add_argument("--max-events", type=int, help="exit after printing N events")
    e.set_defaults(func=cmd_events)

    v = sub.add_parser("validate-config", help="check a config file and exit")
    v.add_argument("config")
    v.set_defaults(func=cmd_validate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except StreamsrvError as exc:
        print(f"streamsrv: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
