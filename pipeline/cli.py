"""`python -m pipeline run|validate|events|identities` (contract: see README)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from pipeline.config import ConfigError, PipelineConfig, load_config, output_dir_for

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

    for name, help_ in (("events", "print identity events as JSON lines"), ("identities", "show the identity store")):
        s = sub.add_parser(name, help=help_)
        where = s.add_mutually_exclusive_group(required=True)
        where.add_argument("--store", help="store URL: redis://…, rediss://…, unix://…")
        where.add_argument("--config", help="find the store a run of this config used (embedded included)")
        s.add_argument("--output-dir", default=None, help="the --output-dir the run used, if any")
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
        else:
            s.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    return p


def _store_location(args) -> tuple[str, Path, PipelineConfig | None]:
    if args.store:
        return args.store, Path(args.output_dir or ".") / "store", None
    config = load_config(args.config)
    return config.store, output_dir_for(config, args.config, args.output_dir) / "store", config


def cmd_run(args) -> int:
    from pipeline.runner import PipelineRunner

    config = load_config(args.config)
    out = output_dir_for(config, args.config, args.output_dir)
    runner = PipelineRunner(config, out, args.max_frames, Path(args.mot_dir) if args.mot_dir else None,
                            progress=not args.no_progress and sys.stderr.isatty(), config_path=Path(args.config))
    summary = runner.run()
    _print_summary(_console(), summary)
    return EXIT_RUNTIME if summary.failed or summary.undelivered else EXIT_OK


def _console():
    from rich.console import Console

    # Piped or captured output gets a wide console: rich's 80-column default would cut table cells.
    return Console() if sys.stdout.isatty() else Console(width=200)


def _print_summary(console, s) -> None:
    from rich.table import Table

    cams = Table(title="cameras")
    for col in ("camera", "status", "frames", "fps", "tracks"):
        cams.add_column(col, justify="right" if col in ("frames", "fps", "tracks") else "left")
    for c in s.cameras:
        status = c["status"] if not c["error"] else f"{c['status']}: {c['error']}"
        cams.add_row(c["camera"], status, str(c["frames"]), f"{c['fps']:.1f}", str(c["tracks"]))
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


def cmd_events(args) -> int:
    from pipeline.store import IdentityStore, open_redis

    url, store_dir, config = _store_location(args)
    stream = args.stream or (config.events.stream if config else "pipeline:events")
    if (args.group is None) != (args.consumer is None):
        raise ConfigError("<command line>", "--group/--consumer", "give both --group and --consumer, or neither")
    if args.mqtt and not args.group:
        raise ConfigError("<command line>", "--mqtt", "needs --group and --consumer (events are acknowledged "
                                                      "once the broker has them)")
    if url == "embedded" and not store_dir.exists():
        raise ConfigError(args.config, "store", f"no embedded store at {store_dir}: run the pipeline first")
    with open_redis(url, store_dir) as client:
        try:
            if args.group:
                from pipeline.consumer import EventConsumer

                consumer = EventConsumer(client, stream, args.group, args.consumer,
                                         start="0" if args.from_start else "$", claim_idle_ms=args.claim_idle_ms)
                if args.mqtt:
                    from pipeline.mqtt_sink import MqttSink, bridge

                    sink = MqttSink(args.mqtt, args.mqtt_topic)
                    try:
                        n = bridge(consumer, sink, follow=args.follow)
                    finally:
                        sink.close()
                    print(f"forwarded {n} events to MQTT", file=sys.stderr)
                    return EXIT_OK
                for d in consumer.deliveries(follow=args.follow):
                    sys.stdout.write(json.dumps(d.event) + "\n")
                    sys.stdout.flush()
                    consumer.ack(d.stream_id)  # printed and flushed: handled
                return EXIT_OK
            store = IdentityStore(client, config.key_prefix if config else "pipeline", stream)
            for _, event in store.read_events(from_start=args.from_start or not args.follow, follow=args.follow):
                sys.stdout.write(json.dumps(event) + "\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a user ends --follow
    return EXIT_OK


def cmd_identities(args) -> int:
    from rich.table import Table

    from pipeline.store import IdentityStore, describe_identity, open_redis

    url, store_dir, config = _store_location(args)
    if url == "embedded" and not store_dir.exists():
        raise ConfigError(args.config, "store", f"no embedded store at {store_dir}: run the pipeline first")
    with open_redis(url, store_dir) as client:
        rows = [describe_identity(r) for r in IdentityStore(client, config.key_prefix if config else "pipeline").identities()]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return EXIT_OK
    table = Table(title=f"{len(rows)} identities")
    cols = ("identity_id", "first_seen", "last_seen", "cameras", "outfits", "sightings", "last_camera", "merged_into")
    for col in cols:
        table.add_column(col)
    for row in rows:
        table.add_row(*(", ".join(row[c]) if isinstance(row[c], list) else ("" if row[c] is None else str(row[c]))
                        for c in cols))
    _console().print(table)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        if args.command == "validate":
            from pipeline.models import resolve_model

            config = load_config(args.config)
            for key, name in (("detector.model", config.detector.model), ("reid.model", config.reid.model)):
                try:
                    resolve_model(name)
                except FileNotFoundError as exc:
                    raise ConfigError(args.config, key, str(exc)) from None
            print(f"{args.config}: ok ({len(config.cameras)} camera(s))")
            return EXIT_OK
        return {"run": cmd_run, "events": cmd_events, "identities": cmd_identities}[args.command](args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except FileNotFoundError as exc:  # model files (ModelNotFound) and other named inputs
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except BrokenPipeError:
        # The reader went away (`events | head`): not an error. Point stdout at devnull so the
        # interpreter's final flush does not raise again (BrokenPipeError is a ConnectionError).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except ConnectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
