"""`python -m pipeline run|validate|events|identities|dashboard` (contract: see README)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from pipeline.config import ConfigError, PipelineConfig, load_config, output_dir_for, store_url_problem
from pipeline.last_run import output_dir_of_last_run, record
from pipeline.preflight import preflight

EXIT_OK, EXIT_RUNTIME, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run cameras through detection, tracking, ReID and matching")
    run.add_argument("config")
    run.add_argument("--max-frames", type=int, default=None, help="stop each camera after N decoded frames")
    run.add_argument("--output-dir", default=None, help="annotated videos and the embedded store (default runs/<config>)")
    run.add_argument("--mot-dir", default=None, help="write each camera's tracks in MOTChallenge format here")
    run.add_argument("--no-progress", action="store_true")

    val = sub.add_parser("validate", help="check a config without running it")
    val.add_argument("config")

    for name, help_ in (("events", "print identity events as JSON lines"), ("identities", "show the identity store"),
                        ("dashboard", "serve the web dashboard over a store, read-only (after or beside a run)")):
        s = sub.add_parser(name, help=help_)
        where = s.add_mutually_exclusive_group(required=True)
        where.add_argument("--store", help="store URL: redis://…, rediss://…, unix://…")
        where.add_argument("--config", help="find the store a run of this config used (embedded included)")
        s.add_argument("--output-dir", default=None,
                       help="the --output-dir the run used (default: the last run of --config, else its output.dir)")
        if name == "dashboard":
            s.add_argument("--host", default=None, help="address to bind (default: the config's dashboard.host, "
                                                        "else 127.0.0.1)")
            s.add_argument("--port", type=int, default=None, help="port (default: the config's dashboard.port, "
                                                                  "else 8080; 0 picks a free one)")
            s.add_argument("--prefix", default=None, help="key prefix of the store (default: the config's, "
                                                          "else pipeline)")
            continue
        if name == "events":
            s.add_argument("--from-start", action="store_true", help="from the first event (default: only new ones)")
            s.add_argument("--follow", action="store_true", help="keep waiting for new events")
            s.add_argument("--stream", default=None, help="stream key (default: the config's, else pipeline:events)")
            s.add_argument("--group", default=None, help="read as this consumer group (acknowledges what it prints)")
            s.add_argument("--consumer", default=None, help="this consumer's name in --group")
            s.add_argument("--claim-idle-ms", type=int, default=30_000,
                           help="with --group: take over events another consumer left unacknowledged this long")
            s.add_argument("--mqtt", default=None, metavar="URL",
                           help="with --group: forward events to this MQTT broker (mqtt://host:1883) instead of stdout")
            s.add_argument("--mqtt-topic", default="pipeline", help="MQTT topic prefix: <prefix>/<event type>")
            s.add_argument("--reconnect-s", type=float, default=60.0,
                           help="with --follow: how long to wait for a store that went away before exiting 0")
        else:
            s.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    return p


def _store_location(args) -> tuple[str, Path, PipelineConfig | None]:
    if args.store:
        problem = store_url_problem(args.store)
        if problem:
            raise ConfigError("<command line>", "--store", problem)
        return args.store, Path(args.output_dir or ".") / "store", None
    config = load_config(args.config)
    out = args.output_dir or output_dir_of_last_run(args.config) or output_dir_for(config, args.config)
    return config.store, Path(out) / "store", config


def _no_store(args, store_dir: Path) -> ConfigError:
    how = "--output-dir" if args.output_dir else f"the last run of {args.config}"
    return ConfigError(args.config, "store", f"no embedded store at {store_dir} ({how}): run the pipeline first, "
                                             "or give the --output-dir the run used")


def cmd_validate(args) -> int:
    config = load_config(args.config)
    preflight(config, args.config, output_dir_for(config, args.config))
    print(f"{args.config}: ok ({len(config.cameras)} camera(s))")
    return EXIT_OK


def cmd_run(args) -> int:
    from pipeline.runner import PipelineRunner

    config = load_config(args.config)
    out = output_dir_for(config, args.config, args.output_dir)
    mot = Path(args.mot_dir) if args.mot_dir else None
    preflight(config, args.config, out, "--output-dir" if args.output_dir else "output.dir", mot)
    runner = PipelineRunner(config, out, args.max_frames, mot, progress=not args.no_progress and sys.stderr.isatty(),
                            config_path=Path(args.config))
    record(args.config, out)  # `events`/`identities`/`dashboard --config` find this run's store
    summary = runner.run()
    _print_summary(_console(), summary)
    return EXIT_RUNTIME if summary.failed or summary.undelivered else EXIT_OK


def _console():
    from rich.console import Console

    # Plain text: paths, camera errors and store messages are the user's text, never rich markup or emoji
    # codes ("[/x]" in a path, "[gstreamer]" in an install hint are printed as they are). Piped or captured
    # output gets a wide console: rich's 80-column default would cut table cells.
    return Console(markup=False, emoji=False, highlight=False, width=None if sys.stdout.isatty() else 200)


def _print_summary(console, s) -> None:
    from rich.table import Table

    cams = Table(title="cameras")
    # "detected": frames the detector looked at; "skipped still": due ones it did not (detector.motion_gate)
    numbers = ("frames", "fps", "tracks", "detected", "skipped still")
    for col in ("camera", "status", *numbers):
        cams.add_column(col, justify="right" if col in numbers else "left")
    for c in s.cameras:
        status = c["status"] if not c["error"] else f"{c['status']}: {c['error']}"
        cams.add_row(c["camera"], status, str(c["frames"]), f"{c['fps']:.1f}", str(c["tracks"]),
                     str(c["detected"]), str(c["detections_skipped_still"]))
    console.print(cams)
    stages = Table(title="stages (ms per camera-frame)")
    for st in s.stage_ms_per_frame:
        stages.add_column(st, justify="right")
    stages.add_row(*(f"{v:.1f}" for v in s.stage_ms_per_frame.values()))
    console.print(stages)
    console.print(
        f"frames {s.frames} in {s.wall_s:.1f} s ({s.frames / max(s.wall_s, 1e-9):.1f} frames/s over all cameras); "
        f"crops embedded {s.crops}; identities {'?' if s.identities is None else s.identities}; "
        f"events {s.events}; output {s.output_dir}"
        + ("; stopped early" if s.stopped_early else "")
    )
    if s.store_outages:
        console.print(f"store outages during the run: {s.store_outages}"
                      + (f"; {s.undelivered} events not delivered, see {s.undelivered_file}" if s.undelivered
                         else "; every buffered event was delivered"))
    elif s.undelivered:
        console.print(f"{s.undelivered} events not delivered, see {s.undelivered_file}")
    if s.store_resets:
        console.print(f"the store came back without its data {s.store_resets} time(s): see the store.reset events")


def _write_event(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _follow_position(client, stream: str, from_start: bool) -> str:
    """Where a plain reader starts: the first event, or after the newest one now (a concrete id, so a
    reconnect resumes where it was and misses nothing published meanwhile)."""
    if from_start:
        return "0-0"
    last = client.xrevrange(stream, count=1)
    return last[0][0].decode() if last else "0-0"


def cmd_events(args) -> int:
    import redis

    from pipeline.consumer import EventConsumer
    from pipeline.embedded import open_store_client
    from pipeline.outage import is_transient
    from pipeline.redact import redact
    from pipeline.store import IdentityStore

    url, store_dir, config = _store_location(args)
    stream = args.stream or (config.events.stream if config else "pipeline:events")
    if (args.group is None) != (args.consumer is None):
        raise ConfigError("<command line>", "--group/--consumer", "give both --group and --consumer, or neither")
    if args.mqtt and not args.group:
        raise ConfigError("<command line>", "--mqtt", "needs --group and --consumer (events are acknowledged "
                                                      "once the broker has them)")
    if url == "embedded" and not store_dir.exists():
        raise _no_store(args, store_dir)
    sink = None
    if args.mqtt:
        from pipeline.mqtt_sink import MqttSink

        sink = MqttSink(args.mqtt, args.mqtt_topic)
    # SIGTERM ends a follower like Ctrl-C: it leaves the store properly (the last user stops the embedded one).
    previous_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
    position: str | None = None  # plain reader: the last event printed
    forwarded = 0
    down_since: float | None = None
    try:
        while True:
            try:
                with open_store_client(url, store_dir, "reader", socket_timeout=10, socket_connect_timeout=5) as client:
                    down_since = None
                    if args.group:
                        consumer = EventConsumer(client, stream, args.group, args.consumer,
                                                 start="0" if args.from_start else "$", claim_idle_ms=args.claim_idle_ms)
                        for d in consumer.deliveries(follow=args.follow):
                            if sink is not None:
                                sink.publish(d.event)
                                forwarded += 1
                            else:
                                _write_event(d.event)
                            consumer.ack(d.stream_id)  # printed and flushed (or confirmed by the broker): handled
                    else:
                        if position is None:
                            position = _follow_position(client, stream, args.from_start or not args.follow)
                        store = IdentityStore(client, config.key_prefix if config else "pipeline", stream)
                        for sid, event in store.read_events(follow=args.follow, after=position):
                            _write_event(event)
                            position = sid
                return EXIT_OK
            except (redis.RedisError, OSError) as exc:
                if isinstance(exc, BrokenPipeError) or not (args.follow and is_transient(exc)):
                    raise
                # Following, and the store went away (restarted, or stopped with its run): wait for it.
                now = time.monotonic()
                down_since = down_since or now
                if now - down_since > args.reconnect_s:
                    print(f"the store at {redact(url)} has been unreachable for {args.reconnect_s:g} s: "
                          "stopped following", file=sys.stderr)
                    return EXIT_OK
                time.sleep(0.5)
    except KeyboardInterrupt:
        return EXIT_OK  # Ctrl-C is how a user ends --follow; the store is left as it was
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if sink is not None:
            sink.close()
            print(f"forwarded {forwarded} events to MQTT", file=sys.stderr)


def cmd_identities(args) -> int:
    from rich.table import Table

    from pipeline.embedded import open_store_client
    from pipeline.store import IdentityStore, describe_identity, merged_from_map

    url, store_dir, config = _store_location(args)
    if url == "embedded" and not store_dir.exists():
        raise _no_store(args, store_dir)
    with open_store_client(url, store_dir, "reader", socket_timeout=10, socket_connect_timeout=5) as client:
        records = IdentityStore(client, config.key_prefix if config else "pipeline").identities()
    merged = merged_from_map(records)
    rows = [describe_identity(r, merged.get(r.identity_id)) for r in records]
    # One count everywhere (run summary, dashboard, here): identities not merged into another. Merged ones
    # are listed after them, marked, so their old ids still resolve.
    rows.sort(key=lambda r: r["merged_into"] is not None)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return EXIT_OK
    active = sum(r["merged_into"] is None for r in rows)
    table = Table(title=f"{active} identities" + (f" (+{len(rows) - active} merged into others, listed last)"
                                                  if len(rows) > active else ""))
    cols = ("identity_id", "first_seen", "last_seen", "cameras", "outfits", "sightings", "last_camera",
            "merged_from", "merged_into")
    for col in cols:
        table.add_column(col)
    for row in rows:
        table.add_row(*(", ".join(map(str, row[c])) if isinstance(row[c], list) else ("" if row[c] is None else str(row[c]))
                        for c in cols))
    _console().print(table)
    return EXIT_OK


def cmd_dashboard(args) -> int:
    from pipeline.dashboard.app import create_app
    from pipeline.dashboard.data import StoreView
    from pipeline.dashboard.server import DashboardServer
    from pipeline.embedded import open_store_client

    url, store_dir, config = _store_location(args)
    if url == "embedded" and not store_dir.exists():
        raise _no_store(args, store_dir)
    host = args.host or (config.dashboard.host if config else "127.0.0.1")
    port = args.port if args.port is not None else (config.dashboard.port if config and config.dashboard.port
                                                     is not None else 8080)
    if not 0 <= port <= 65535:
        raise ConfigError("<command line>", "--port", f"a port is 0-65535, got {port}")
    prefix = args.prefix or (config.key_prefix if config else "pipeline")
    stream = config.events.stream if config else "pipeline:events"
    previous_term = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with open_store_client(url, store_dir, "reader", socket_timeout=10, socket_connect_timeout=5) as client:
            stopping = threading.Event()
            server = DashboardServer(create_app(StoreView(client, prefix, stream), read_only=True, stopping=stopping),
                                     host, port, stopping)
            try:
                server.start()
            except OSError as exc:
                raise ConfigError("<command line>" if args.port is not None or not config else args.config,
                                  "--port" if args.port is not None or not config else "dashboard.port",
                                  f"cannot serve the dashboard on {host}:{port}: {exc.strerror or exc}") from None
            print(f"dashboard (read-only) on {server.url} — Ctrl-C to stop", file=sys.stderr, flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
            finally:
                server.stop()
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    return EXIT_OK


class _UTCFormatter(logging.Formatter):
    """Log lines start with the UTC time, as events' `ts` (ISO-8601, milliseconds, Z)."""

    def formatTime(self, record, datefmt=None):  # noqa: N802 (logging's name)
        from pipeline.events import iso_utc

        return iso_utc(record.created)


def main(argv: list[str] | None = None) -> int:
    handler = logging.StreamHandler()
    handler.setFormatter(_UTCFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    args = _parser().parse_args(argv)
    from pipeline.outage import StoreFailure
    from pipeline.redact import redact

    try:
        return {"validate": cmd_validate, "run": cmd_run, "events": cmd_events,
                "identities": cmd_identities, "dashboard": cmd_dashboard}[args.command](args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except FileNotFoundError as exc:  # model files (ModelNotFound) and other named inputs
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    except BrokenPipeError:
        # The reader went away (`events | head`): not an error. Point stdout at devnull so the
        # interpreter's final flush does not raise again (BrokenPipeError is a ConnectionError).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (ConnectionError, StoreFailure) as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_RUNTIME
    except Exception as exc:
        import redis

        if not isinstance(exc, redis.RedisError):
            raise  # a bug: the traceback is what helps
        print(f"error: the store answered {type(exc).__name__}: {redact(str(exc))}", file=sys.stderr)
        return EXIT_RUNTIME
