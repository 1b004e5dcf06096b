"""Settings: one table declares every key, its default, its parser and its help.

The table is the only place a default lives.  ``tus.ini``, the environment
variables (``TUSWSGI_<KEY>``), ``create_app(**overrides)`` and the generated
documentation are all read through it, so they cannot disagree.

Precedence, lowest first: built-in default < config file < environment
variable < keyword override.  The config file is ``TUSWSGI_CONFIG`` if set,
else ``./tus.ini`` if it exists, else none.
"""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, MutableMapping, Optional

from .events import EVENTS
from .space import DiskReserve

SECTION = "tuswsgi"
ENV_PREFIX = "TUSWSGI_"
CONFIG_ENV = "TUSWSGI_CONFIG"
DEFAULT_CONFIG_FILE = "tus.ini"

CHECKSUM_ALGORITHMS = ("md5", "sha1", "sha256", "sha512", "crc32")
FSYNC_POLICIES = ("none", "finish", "always")

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NUMBER_WITH_UNIT = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]?)b?")


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names key and value."""


def parse_size(text: str) -> int:
    """Parse ``1024``, ``512K``, ``10M``, ``2G``, ``1T`` (binary units) into bytes."""
    match = _NUMBER_WITH_UNIT.fullmatch(text.strip().lower())
    if not match or match.group(2) not in _SIZE_UNITS:
        raise ValueError("expected bytes with an optional K/M/G/T suffix, e.g. 10G")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def parse_duration(text: str) -> float:
    """Parse ``45``, ``45s``, ``30m``, ``12h``, ``7d``, ``2w`` into seconds."""
    match = _NUMBER_WITH_UNIT.fullmatch(text.strip().lower())
    if not match or match.group(2) not in _DURATION_UNITS:
        raise ValueError("expected a duration such as 45s, 30m, 12h or 7d")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_reserve(text: str) -> DiskReserve:
    """``5%`` (of the file system's blocks and inodes) or a size: ``10G``, ``0``."""
    value = text.strip()
    if not value.endswith("%"):
        return DiskReserve(size=parse_size(value))
    try:
        share = float(value[:-1])
    except ValueError:
        raise ValueError("expected a size such as 10G or a percentage such as 5%") from None
    if not 0 <= share < 100:
        raise ValueError("a percentage must be at least 0 and under 100")
    return DiskReserve(share=share / 100)


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected on/off (or true/false, yes/no, 1/0)")


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(item for item in re.split(r"[\s,]+", text.strip()) if item)


def parse_base_path(text: str) -> str:
    path = text.strip()
    if not re.fullmatch(r"/(?:[A-Za-z0-9._~-]+/)*", path.rstrip("/") + "/"):
        raise ValueError("expected a URL path such as /files/")
    return path.rstrip("/") + "/"


def parse_checksums(text: str) -> tuple[str, ...]:
    names = tuple(name.lower() for name in parse_list(text))
    unknown = [name for name in names if name not in CHECKSUM_ALGORITHMS]
    if unknown:
        raise ValueError("supported algorithms are " + ", ".join(CHECKSUM_ALGORITHMS))
    return names


def parse_fsync(text: str) -> str:
    value = text.strip().lower()
    if value not in FSYNC_POLICIES:
        raise ValueError("expected one of " + ", ".join(FSYNC_POLICIES))
    return value


def parse_events(text: str) -> tuple[str, ...]:
    names = parse_list(text)
    unknown = [name for name in names if name not in EVENTS]
    if unknown:
        raise ValueError("events are " + ", ".join(EVENTS))
    return names


def parse_int(text: str) -> int:
    value = int(text.strip())
    if value < 0:
        raise ValueError("must not be negative")
    return value


def parse_positive_int(text: str) -> int:
    value = parse_int(text)
    if value == 0:
        raise ValueError("must be at least 1")
    return value


def _choice(text: str, choices: tuple[str, ...]) -> str:
    value = text.strip().lower()
    if value not in choices:
        raise ValueError("expected one of " + ", ".join(choices))
    return value


def parse_positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


@dataclass(frozen=True)
class Setting:
    """One key.  Keys named ``<section>_<key>`` for a section other than
    ``[tuswsgi]`` are written ``<key>`` inside ``[<section>]`` in the file.
    ``production`` replaces ``default`` where tuswsgi is deployed (``tuswsgi
    serve``, deploy/): see :func:`apply_defaults`."""

    name: str
    default: str
    parse: Callable[[str], Any]
    help: str
    section: str = SECTION
    production: Optional[str] = None

    @property
    def file_key(self) -> str:
        prefix = self.section + "_"
        return self.name[len(prefix):] if self.section != SECTION else self.name


SETTINGS: tuple[Setting, ...] = (
    Setting("upload_dir", "./uploads", str,
            "Directory holding the uploads (created on demand)."),
    Setting("base_path", "/files/", parse_base_path,
            "URL path of the tus endpoint; uploads live at <base_path><id>."),
    Setting("max_size", "0", parse_size,
            "Largest upload accepted, in bytes (K/M/G/T suffixes); 0 means no limit."),
    Setting("max_append_size", "0", parse_size,
            "Largest body accepted in one request (K/M/G/T); 0 means no limit. Advertised in "
            "Upload-Limit, so clients behind body-limited proxies (e.g. 100M) can chunk below it."),
    Setting("max_concat_parts", "100", parse_int,
            "Most partial uploads one final concatenation may name (each once); 0 means no limit."),
    Setting("client_creation_rate", "0", parse_int,
            "Uploads one client may create a minute (finals too); more get 429 ERR_TOO_MANY_CREATIONS "
            "until the minute is over. A client is the identity a pre-access hook gives, else its "
            "address (an IPv6 /64); loopback is nobody (behind a proxy set behind_proxy). Counted in "
            "upload_dir, by all workers and hosts together. 0: no cap.", production="1000"),
    Setting("client_max_unfinished", "0", parse_int,
            "Unfinished uploads one client may hold (expired ones do not count); one more gets 429 "
            "ERR_TOO_MANY_UNFINISHED until it finishes or deletes one. 0: no cap.", production="1000"),
    Setting("disk_reserve", "0", parse_reserve,
            "Free space kept for the uploads already running: below it new uploads are refused "
            "(507 ERR_DISK_RESERVE) while running ones go on and finish. A size (10G), or a share "
            "of the upload directory's file system (5%), which keeps that share of its inodes too; "
            "0: none.", production="5%"),
    Setting("expiration", "7d", parse_duration,
            "Unfinished uploads expire this long after their last received byte; 0 disables."),
    Setting("gone_retention", "7d", parse_duration,
            "How long terminated or expired uploads answer 410 before they are forgotten (404)."),
    Setting("cleanup_interval", "1h", parse_duration,
            "How often a worker sweeps expired uploads in passing; 0 disables (use `tuswsgi cleanup`)."),
    Setting("checksum_algorithms", "md5,sha1,sha256,sha512,crc32", parse_checksums,
            "Algorithms accepted in Upload-Checksum (checksum extension)."),
    Setting("checksum_trailer", "on", parse_bool,
            "Offer checksum-trailer (Upload-Checksum as a trailer of a chunked body; needs "
            "tuswsgi's gunicorn worker). Turn it off behind a proxy that drops request "
            "trailers, as nginx does."),
    Setting("download", "on", parse_bool,
            "Serve finished uploads with GET (Range, ETag, safe Content-Disposition)."),
    Setting("cors_origins", "*", parse_list,
            "Origins allowed by CORS, separated by commas or spaces; * allows any."),
    Setting("cors_allow_credentials", "off", parse_bool,
            "Let browsers send cookies and HTTP auth cross-origin (Access-Control-Allow-Credentials); "
            "needs cors_origins to list the origins, not *."),
    Setting("behind_proxy", "off", parse_bool,
            "Trust X-Forwarded-* and Forwarded headers to build Location URLs."),
    Setting("network_timeout", "60s", parse_positive_duration,
            "A request body that sends no data for this long is cut (received bytes are kept); a "
            "response the client takes nothing of for this long is abandoned."),
    Setting("min_body_rate", "240", parse_size,
            "Slowest request body kept, in bytes a second over each min_body_rate_window; a slower "
            "one (a drip that resets network_timeout) ends like a silent one, bytes kept. 0: no minimum."),
    Setting("min_body_rate_window", "30s", parse_positive_duration,
            "The window over which min_body_rate is judged; a client may pause within it."),
    Setting("head_timeout", "30s", parse_positive_duration,
            "A request head must arrive in full within this long (from connecting, or from its first "
            "byte on a kept-alive connection); a slower one is answered 408 and closed."),
    Setting("keepalive_timeout", "75s", parse_duration,
            "An idle kept-alive connection is closed after this long without a request; 0 turns "
            "keep-alive off."),
    Setting("linger_timeout", "5s", parse_positive_duration,
            "After an early answer, what the client still sends is read and dropped until it is silent "
            "this long (six times as long at most), so it reads the answer instead of a reset."),
    Setting("max_head_size", "64K", parse_size,
            "Largest request head (request line and headers) accepted; a larger one is answered 431 as "
            "soon as the limit is crossed."),
    Setting("lock_timeout", "5s", parse_duration,
            "How long a request waits for an upload held by another request before 423."),
    Setting("max_metadata_size", "16K", parse_size,
            "Largest Upload-Metadata header accepted, in bytes."),
    Setting("upload_page", "on", parse_bool,
            "Serve the built-in browser upload page; off by default where deployed "
            "(tuswsgi serve, deploy/), where it is a demo rather than the product.",
            production="off"),
    Setting("upload_page_path", "/", parse_base_path,
            "URL path of the upload page; its assets live under <upload_page_path>static/."),
    Setting("fsync", "none", parse_fsync,
            "none: leave flushing to the OS; finish: fsync when an upload completes; "
            "always: fsync before acknowledging every request."),
    Setting("log_format", "text", lambda text: _choice(text, ("text", "json")),
            "Log lines as plain text or as one JSON object per line."),
    Setting("metrics", "off", parse_bool,
            "Serve Prometheus metrics (needs the optional prometheus_client package)."),
    Setting("metrics_path", "/metrics", lambda text: parse_base_path(text).rstrip("/"),
            "URL path of the metrics endpoint."),
    Setting("bind", "127.0.0.1:8000", str,
            "Address the server listens on (tuswsgi serve, deploy/): host:port or "
            "unix:/path; keep it on loopback behind a proxy."),
    Setting("workers", "0", parse_int,
            "Server worker processes; 0 means one per CPU core."),
    Setting("threads", "6000", parse_positive_int,
            "Threads per worker: each open upload holds one while its body streams."),
    Setting("max_connections", "10000", parse_positive_int,
            "Open connections per worker; at the limit the oldest idle or slow-head connection is "
            "closed to make room for a new one. Each also needs a file descriptor."),
    Setting("reserved_threads", "50", parse_int,
            "Threads per worker kept for requests without a body (HEAD, OPTIONS, DELETE), so a "
            "resuming client learns its offset even when uploads fill every other thread."),
    Setting("accesslog", "", str,
            "The server's own access log: a file, or - for stderr; empty leaves it off (tuswsgi logs "
            "every request itself)."),
    Setting("hooks_python", "", parse_list,
            "In-process hook functions, as package.module:function (comma-separated).",
            section="hooks"),
    Setting("hooks_dir", "", str,
            "Directory of executables named after events (tusd file hooks).", section="hooks"),
    Setting("hooks_http", "", str,
            "URL that receives each event as a JSON POST (tusd HTTP hooks).", section="hooks"),
    Setting("hooks_http_retries", "3", parse_int,
            "Retries of a failed HTTP hook call (connection errors and 5xx).", section="hooks"),
    Setting("hooks_http_backoff", "1s", parse_duration,
            "Wait before the first retry; doubled for each further one.", section="hooks"),
    Setting("hooks_http_forward_headers", "", parse_list,
            "Request headers copied onto HTTP hook calls, e.g. Authorization, Cookie.",
            section="hooks"),
    Setting("hooks_timeout", "30s", parse_positive_duration,
            "Longest a hook command or HTTP call may take.", section="hooks"),
    Setting("hooks_enabled", "pre-access,pre-create,post-create,post-receive,pre-finish,"
            "post-finish,pre-terminate,post-terminate", parse_events,
            "Events sent to the hooks.", section="hooks"),
    Setting("hooks_progress_interval", "1s", parse_positive_duration,
            "Least time between two post-receive events of one request.", section="hooks"),
)

SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}
#: What a deployment changes from the defaults a development run gets.
PRODUCTION_DEFAULTS = {s.name: s.production for s in SETTINGS if s.production is not None}


@dataclass(frozen=True)
class Rule:
    """Values each valid alone that make the server unusable together (``error``:
    start-up and ``check-config`` refuse them) or that are likely a mistake
    (``warning``: ``check-config`` prints it, start-up logs it).  ``when`` says in
    words what ``broken`` tests, for the documentation."""

    keys: tuple[str, ...]
    when: str
    broken: Callable[[Mapping[str, Any]], bool]
    why: str
    severity: str = "error"

    def message(self, values: Mapping[str, Any]) -> str:
        current = ", ".join(f"{key} = {_shown(key, values[key])}" for key in self.keys)
        return f"{current}: {self.why}"


#: What the settings must satisfy together; docs/configuration.md lists them.
RULES: tuple[Rule, ...] = (
    Rule(("cors_allow_credentials", "cors_origins"), "credentials on, origins `*`",
         lambda v: v["cors_allow_credentials"] and "*" in v["cors_origins"],
         "cors_allow_credentials = on needs cors_origins to list the allowed origins; * cannot be "
         "combined with credentials (browsers refuse it, and echoing any origin would let every "
         "site act with the user's cookies)"),
    Rule(("expiration", "network_timeout"), "`expiration` is not 0 and not longer than `network_timeout`",
         lambda v: 0 < v["expiration"] <= v["network_timeout"],
         "an unfinished upload would expire while one of its requests may still wait for bytes "
         "(network_timeout), and its client's next request would get 410; make expiration hours or days"),
    Rule(("network_timeout",), "under 1 s", lambda v: v["network_timeout"] < 1,
         "request bodies would be cut in the ordinary pauses of a real network; use at least 1s"),
    Rule(("head_timeout",), "under 1 s", lambda v: v["head_timeout"] < 1,
         "request heads would be refused before they can arrive over a real network; use at least 1s"),
    Rule(("max_head_size",), "under 4 KiB", lambda v: v["max_head_size"] < 4096,
         "ordinary requests (a browser's cookies, Upload-Metadata) would be refused with 431; use at "
         "least 4K"),
    Rule(("expiration",), "not 0 and under 1 h", lambda v: 0 < v["expiration"] < 3600,
         "a client that is offline longer than this (a laptop closed over lunch) loses its upload",
         "warning"),
    Rule(("cleanup_interval",), "not 0 and under 1 min", lambda v: 0 < v["cleanup_interval"] < 60,
         "every worker lists the whole upload directory this often", "warning"),
    Rule(("lock_timeout",), "under 2 s", lambda v: v["lock_timeout"] < 2,
         "a resuming client may be told 423 before the request it takes over from has stopped "
         "(a hand-over takes up to 2s)", "warning"),
)


class Config:
    """Parsed settings, read as attributes (``config.max_size``)."""

    def __init__(self, values: Mapping[str, Any], source: Optional[str] = None,
                 warnings: tuple[str, ...] = ()) -> None:
        self._values = dict(values)
        self.source = source
        #: What the :data:`RULES` of severity ``warning`` say of these values.
        self.warnings = warnings

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)


def _parse(name: str, raw: Any, origin: str) -> Any:
    setting = SETTINGS_BY_NAME.get(name)
    if setting is None:
        raise ConfigError(f"{origin}: unknown key {name!r}")
    if isinstance(raw, (list, tuple)):
        raw = ",".join(map(str, raw))
    elif not isinstance(raw, str):
        raw = str(raw)
    try:
        return setting.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{origin}: bad value for {name!r}: {raw!r} ({exc})") from None


def defaults() -> Config:
    """The built-in defaults alone: no file, no environment."""
    return Config({s.name: s.parse(s.default) for s in SETTINGS})


def find_config_file(environ: Mapping[str, str] = os.environ) -> Optional[str]:
    """The file to read: ``$TUSWSGI_CONFIG``, else ``./tus.ini`` when present."""
    explicit = environ.get(CONFIG_ENV)
    if explicit:
        return explicit
    return DEFAULT_CONFIG_FILE if os.path.isfile(DEFAULT_CONFIG_FILE) else None


def read_config_file(path: str) -> list[tuple[str, str, str]]:
    """``(section, key, value)`` for every key of the sections tuswsgi owns
    (``[tuswsgi]``, ``[hooks]``); other sections are left to other programs."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path!r}: {exc.strerror}") from None
    except configparser.Error as exc:
        raise ConfigError(f"config file {path!r} is malformed: {exc}") from None
    owned = {setting.section for setting in SETTINGS}
    return [(section, key, value) for section in parser.sections() if section in owned
            for key, value in parser.items(section)]


def _setting_name(section: str, key: str, origin: str) -> str:
    name = key if section == SECTION else f"{section}_{key}"
    setting = SETTINGS_BY_NAME.get(name)
    if setting is None or setting.section != section:
        raise ConfigError(f"{origin}: unknown key {key!r}")
    return name


def load_config(path: Optional[str] = None, *, environ: Mapping[str, str] = os.environ,
                **overrides: Any) -> Config:
    """Build the configuration; raise :class:`ConfigError` naming any bad key or value."""
    source = path if path is not None else find_config_file(environ)
    values = {s.name: s.parse(s.default) for s in SETTINGS}
    if source is not None:
        for section, key, raw in read_config_file(source):
            origin = f"{source} [{section}]"
            values[_setting_name(section, key, origin)] = _parse(
                _setting_name(section, key, origin), raw, origin)
    for setting in SETTINGS:
        env_name = ENV_PREFIX + setting.name.upper()
        if env_name in environ:
            values[setting.name] = _parse(setting.name, environ[env_name], env_name)
    for name, raw in overrides.items():
        values[name] = _parse(name, raw, "create_app()")
    return Config(values, source, check_rules(values))


def check_rules(values: Mapping[str, Any]) -> tuple[str, ...]:
    """Raise :class:`ConfigError` naming every broken rule of severity ``error``;
    return the messages of the broken warnings."""
    broken = [rule for rule in RULES if rule.broken(values)]
    errors = [rule.message(values) for rule in broken if rule.severity == "error"]
    if errors:
        raise ConfigError("; ".join(errors))
    return tuple(rule.message(values) for rule in broken if rule.severity == "warning")


def _shown(name: str, value: Any) -> str:
    """A parsed value as an operator writes it: ``0.001s``, ``4096``, ``on``."""
    if SETTINGS_BY_NAME[name].parse in (parse_duration, parse_positive_duration):
        return f"{value:g}s"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def configured(name: str, environ: MutableMapping[str, str]) -> bool:
    """Whether the operator set ``name`` (its environment variable, or the config
    file tuswsgi will read)."""
    setting = SETTINGS_BY_NAME[name]
    if ENV_PREFIX + name.upper() in environ:
        return True
    path = find_config_file(environ)
    if path is None or not os.path.isfile(path):
        return False  # a missing TUSWSGI_CONFIG is reported when the app loads
    try:
        entries = read_config_file(path)
    except ConfigError:  # reported, with the file's name, when the app loads
        return False
    return any((section, key) == (setting.section, setting.file_key) for section, key, _ in entries)


def apply_defaults(environ: MutableMapping[str, str], defaults: Mapping[str, str]) -> None:
    """Use ``defaults`` for the settings the operator did not set, through the
    environment, so every process the server starts (workers, CGI runs) sees them;
    the deploy files call this with :data:`PRODUCTION_DEFAULTS`."""
    for name, value in defaults.items():
        if not configured(name, environ):
            environ[ENV_PREFIX + name.upper()] = value
