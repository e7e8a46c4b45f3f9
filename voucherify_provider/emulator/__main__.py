"""Command line: ``python -m voucherify_provider.emulator --port 8089 --seed 42 --scale 1000``."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone

from voucherify_provider.emulator.config import EmulatorConfig


def _date(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and serve until interrupted."""
    defaults = EmulatorConfig()
    parser = argparse.ArgumentParser(prog="python -m voucherify_provider.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--app-id", default=defaults.app_id)
    parser.add_argument("--app-token", default=defaults.app_token)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--scale", type=int, default=defaults.scale, help="number of redemptions")
    parser.add_argument("--start", type=_date, default=defaults.start, help="first creation date (UTC)")
    parser.add_argument("--end", type=_date, default=defaults.end, help="end of the creation dates (UTC)")
    parser.add_argument("--scheduled-seconds", type=float, default=defaults.scheduled_seconds)
    parser.add_argument("--in-progress-seconds", type=float, default=defaults.in_progress_seconds)
    parser.add_argument("--in-progress-seconds-max", type=float, default=defaults.in_progress_seconds_max,
                        help="draw each export's duration between --in-progress-seconds and this")
    parser.add_argument("--export-rows-per-second", type=float, default=defaults.export_rows_per_second,
                        help="keep each export IN_PROGRESS rows / this seconds longer (0: size does not matter)")
    parser.add_argument("--export-cache-dir", default=defaults.export_cache_dir,
                        help="render each export file once into this directory and serve it from disk")
    parser.add_argument("--rate-limit-per-minute", type=int, default=defaults.rate_limit_per_minute)
    parser.add_argument("--chunk-rows", type=int, default=defaults.chunk_rows)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    try:
        config = EmulatorConfig(
            app_id=args.app_id, app_token=args.app_token, seed=args.seed, scale=args.scale, start=args.start,
            end=args.end, scheduled_seconds=args.scheduled_seconds, in_progress_seconds=args.in_progress_seconds,
            in_progress_seconds_max=args.in_progress_seconds_max, export_rows_per_second=args.export_rows_per_second,
            export_cache_dir=args.export_cache_dir, rate_limit_per_minute=args.rate_limit_per_minute,
            chunk_rows=args.chunk_rows,
        )
    except ValueError as err:
        parser.error(str(err))  # a usage error, not a traceback
    from voucherify_provider.emulator.server import build_server

    print(f"Voucherify emulator on http://{args.host}:{args.port} (seed {args.seed}, scale {args.scale})", flush=True)
    server, _ = build_server(config, args.host, args.port, args.log_level)
    server.run()


if __name__ == "__main__":
    main()
