"""The ``tuswsgi`` command: run the server and look after the upload directory."""

from __future__ import annotations

import argparse
import calendar
import json
import os
import sys
import time
from typing import Optional, Sequence

from . import sharedcheck
from .config import PRODUCTION_DEFAULTS, SETTINGS, ConfigError, apply_defaults, load_config
from .hooks import hooks_from_config
from .protocol import decode_metadata
from .server import server_command
from .service import UploadService
from .space import DiskReserve, DiskSpace
from .store import UploadNotFound
from .upload import InvalidUploadId, UploadInfo, check_upload_id


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="tuswsgi", description="tus resumable-upload server")
    parser.add_argument("-c", "--config", help="config file (default: $TUSWSGI_CONFIG or ./tus.ini)")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server with the production settings")
    serve.add_argument("server_args", nargs=argparse.REMAINDER,
                       help="extra server options, e.g. --bind 0.0.0.0:8000")
    listing = commands.add_parser("list", help="list uploads")
    listing.add_argument("--json", action="store_true")
    show = commands.add_parser("show", help="show one upload")
    show.add_argument("upload_id")
    show.add_argument("--json", action="store_true")
    cleanup = commands.add_parser("cleanup", help="remove expired and terminated uploads")
    cleanup.add_argument("--dry-run", action="store_true")
    commands.add_parser("check-config", help="validate the configuration and print it")
    commands.add_parser("sample-config", help="print a tus.ini with every key commented")
    shared = commands.add_parser(
        "check-shared-dir", help="check that an upload directory can be shared by several servers",
        description="Check what tuswsgi relies on when servers share an upload directory: locks, sizes "
                    "and bytes after a lock changes hands, appends, renames, racing creations, "
                    "modification times, listings. Give two mounts of the same directory (on one "
                    "host, each its own client) to check what one host sees of another's changes. "
                    "Exit status 0: safe; 1: not safe; 2: the check could not run.")
    shared.add_argument("directory", help="the upload directory (the check works in a scratch dir in it)")
    shared.add_argument("second", nargs="?", help="another mount of the same directory")
    args = parser.parse_args(argv)

    if args.command == "sample-config":
        sys.stdout.write(sample_config())
        return 0
    if args.command == "check-shared-dir":
        return check_shared_dir_command(args.directory, args.second)
    if args.command == "serve":
        return serve_command(args)
    try:
        config = load_config(args.config)
        hooks_from_config(config, lambda event, ok: None)  # imports hook functions
    except ConfigError as exc:
        print(f"tuswsgi: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        for warning in config.warnings:
            print(f"tuswsgi: configuration warning: {warning}", file=sys.stderr)
        print(f"# configuration from {config.source or 'built-in defaults'}: OK")
        for name, value in config.as_dict().items():
            print(f"{name} = {_format_value(value)}")
        return 0
    service = UploadService(config)
    if args.command == "cleanup":
        for upload_id, action in service.cleanup(dry_run=args.dry_run):
            print(f"{'would be ' if args.dry_run else ''}{action}: {upload_id}")
        service.hooks.drain()  # post-finish of the uploads it finished
        return 0
    if args.command == "list":
        rows = [describe(info) for info in _all_uploads(service)]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(_table(rows))
        print("\n".join(["", *_summary(rows, DiskSpace.of(service.store.directory), config.disk_reserve)]))
        return 0
    try:
        info = service.store.inspect(check_upload_id(args.upload_id))
    except (UploadNotFound, InvalidUploadId):
        print(f"tuswsgi: no upload {args.upload_id!r}", file=sys.stderr)
        return 1
    row = describe(info)
    print(json.dumps(row, indent=2) if args.json else
          "\n".join(f"{key:>10}: {value}" for key, value in row.items()))
    return 0


def serve_command(args: argparse.Namespace) -> int:
    if args.config:
        os.environ["TUSWSGI_CONFIG"] = args.config
    apply_defaults(os.environ, PRODUCTION_DEFAULTS)  # as the deploy/ files do
    try:
        UploadService(load_config())
    except ConfigError as exc:
        print(f"tuswsgi: configuration error: {exc}", file=sys.stderr)
        return 2
    command = server_command([arg for arg in args.server_args if arg != "--"])
    os.execv(sys.executable, command)
    return 1  # not reached


def check_shared_dir_command(directory: str, second: Optional[str]) -> int:
    """Print the report; 0 when safe, 1 when not, 2 when the check could not run."""
    for path in filter(None, (directory, second)):
        if not os.path.isdir(path):
            print(f"tuswsgi: {path} is not a directory", file=sys.stderr)
            return 2
    try:
        results = sharedcheck.check_shared_dir(directory, second)
    except OSError as exc:
        print(f"tuswsgi: cannot check {directory}: {exc}", file=sys.stderr)
        return 2
    print(sharedcheck.format_report(directory, second, results))
    return 0 if sharedcheck.is_safe(results) else 1


def sample_config() -> str:
    """``tus.ini`` text: every setting, commented out at its default, with its help."""
    lines = ["# tuswsgi configuration. Every key is optional; the value shown is the default.",
             "# Each key can also be set by an environment variable: TUSWSGI_<KEY> for",
             "# [tuswsgi], TUSWSGI_<SECTION>_<KEY> for the other sections.",
             "# Sizes take K/M/G/T suffixes; durations s/m/h/d/w."]
    section = None
    for setting in SETTINGS:
        if setting.section != section:
            section = setting.section
            lines += ["", f"[{section}]"]
        lines += ["", f"# {setting.help}", f"# {setting.file_key} = {setting.default}".rstrip()]
    return "\n".join(lines) + "\n"


def _all_uploads(service: UploadService):
    for upload_id in service.store.iter_ids():
        try:
            yield service.store.inspect(upload_id)
        except (UploadNotFound, ValueError):
            continue


def describe(info: UploadInfo) -> dict:
    now = time.time()
    if info.is_gone:
        state = "gone"
    elif info.is_complete:
        state = "finished"
    elif info.expires is not None and info.expires <= now:
        state = "expired"
    else:
        state = "receiving" if now - info.modified < 60 else "paused"
    meta = decode_metadata(info.metadata)
    return {
        "id": info.id,
        "filename": meta.get("filename") or meta.get("name") or "",
        "size": info.length,
        "received": info.offset,
        "percent": round(100 * info.offset / info.length, 1) if info.length else None,
        "state": state,
        "kind": info.concat or "",
        "created": _iso(info.created),
        "modified": _iso(info.modified),
        "expires": _iso(info.expires) if info.expires else None,
    }


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _epoch(iso: str) -> float:
    return calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))


def human_size(size: Optional[int]) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(size)


def human_duration(seconds: float) -> str:
    """``45s``, ``12m``, ``5h``, ``3d``: the largest unit that fits."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _table(rows: list[dict]) -> str:
    now = time.time()
    header = ("ID", "FILENAME", "SIZE", "RECEIVED", "%", "STATE", "AGE", "IDLE", "EXPIRES")
    body = [(r["id"], r["filename"][:30], human_size(r["size"]), human_size(r["received"]),
             "" if r["percent"] is None else f"{r['percent']}", r["state"],
             human_duration(now - _epoch(r["created"])), human_duration(now - _epoch(r["modified"])),
             _expiry(r["expires"], now))
            for r in rows]
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(width)
                              for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in [header, *body])


def _summary(rows: list[dict], space: DiskSpace, reserve: DiskReserve) -> list[str]:
    """What the uploads hold, by state, and what the disk has left: what an
    operator needs to know before deleting anything on a full disk."""
    def held(states: tuple[str, ...]) -> tuple[int, int]:
        chosen = [row for row in rows if row["state"] in states]
        return len(chosen), sum(row["received"] for row in chosen)

    running, running_bytes = held(("receiving", "paused"))
    to_come = sum(row["size"] - row["received"] for row in rows
                  if row["state"] in ("receiving", "paused") and row["size"] is not None)
    expired, expired_bytes = held(("expired",))
    finished, finished_bytes = held(("finished",))
    lines = [f"{len(rows)} uploads: {running} unfinished hold {human_size(running_bytes)} "
             f"({human_size(to_come)} more to come), {expired} expired hold {human_size(expired_bytes)} "
             f"(tuswsgi cleanup removes them), {finished} finished hold {human_size(finished_bytes)}"]
    disk = f"disk: {human_size(space.free)} free of {human_size(space.total)}"
    if reserve:
        lines.append(f"{disk}; new uploads are refused below {human_size(reserve.kept(space))} free "
                     f"(disk_reserve = {reserve})")
    else:
        lines.append(f"{disk}; no disk_reserve: new uploads are accepted until the disk is full")
    return lines


def _expiry(expires: Optional[str], now: float) -> str:
    """``in 3d``, or ``expired 2h ago`` (until a cleanup pass removes it)."""
    if not expires:
        return "-"
    left = _epoch(expires) - now
    return f"in {human_duration(left)}" if left > 0 else f"expired {human_duration(-left)} ago"


def _format_value(value) -> str:
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
