"""Read the YAML configuration (docs/configuration.md) into a validated Config.

Every user mistake becomes one line of ConfigError.problems naming the file, the key or
queue, and what is wrong; all problems are collected so one `--check` run shows them all.
Queues may be OpenSIPS modparam strings or mappings; both go through modparam.build_spec.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mi_server.datagram.address import (
    UDP_PAYLOAD_MAX,
    BadAddress,
    DatagramAddress,
    parse_address,
)
from mi_server.engine.spec import QueueSpec
from mi_server.modparam import ModparamError, build_spec, split_modparam
from mi_server.storage.names import InvalidTableName, check_table_name
from mi_server.storage.url import BadDbUrl, SqliteUrl, parse_db_url

DEFAULT_SHM_SIZE = 64 * 1024 * 1024
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DELIVERIES = ("at-most-once", "at-least-once")
TOP_LEVEL_KEYS = ("db_url", "shm_size", "shm_name", "mqueue", "http", "fifo", "datagram",
                  "consumers", "log_level", "log_target", "pid_file", "state_dir", "engine")
ENGINE_BACKENDS = ("shm", "redis")
REDIS_SCHEMES = ("redis", "rediss", "unix")
LOG_TARGETS = ("stderr", "syslog")
_SIZE_RE = re.compile(r"\s*([0-9]+)\s*([kKmMgG]?)\s*\Z")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_SERVER_NAME_RE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?\Z")
_SHM_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}\Z")  # one name under /dev/shm
_HTTP_ROOT_RE = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@-]+(/[A-Za-z0-9._~!$&'()*+,;=:@-]+)*\Z")


class ConfigError(Exception):
    """The configuration is invalid; `problems` holds one clear line per mistake."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 8888
    root: str = "mi"
    workers: int = 2
    max_request: int = 65536
    auth: tuple[str, str] | None = None
    allowed_origins: tuple[str, ...] = ()  # browser Origins served; any other -> 403
    server_names: tuple[str, ...] = ()  # Host names served besides the listen address
    html: HtmlConfig | None = field(default_factory=lambda: HtmlConfig())
    metrics: MetricsConfig | None = field(default_factory=lambda: MetricsConfig())
    health: HealthConfig | None = field(default_factory=lambda: HealthConfig())


@dataclass(frozen=True)
class MetricsConfig:
    """http.metrics: GET /<root> in the Prometheus text format (mi_server.monitoring), with
    the OpenSIPS prometheus module's parameters."""

    root: str = "metrics"
    prefix: str = "opensips"
    delimiter: str = "_"
    group_mode: int = 0  # 0: no group in the name, 1: group in the name, 2: group label
    group_label: str = "group"
    statistics: tuple[str, ...] = ("all",)  # names, "grp:" groups or "all"
    auth: bool = False  # true: http.auth's credentials are required, as for MI


@dataclass(frozen=True)
class HealthConfig:
    """http.health: GET /<root> answers 200 when the server is ready, 503 otherwise."""

    root: str = "health"
    auth: bool = False


@dataclass
class HtmlConfig:
    """The web page (mi_server.web) under the HTTP listener."""

    root: str = "html"
    side_effects: bool = True  # False: the page runs only commands that change nothing
    # The key of the page's form tokens: made here, in the supervisor before it forks the
    # HTTP workers, so every worker accepts the tokens any other one issued.
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False,
                          compare=False)


@dataclass
class FifoConfig:
    path: Path = Path("/tmp/opensips_fifo")
    mode: int = 0o660
    user: str | None = None
    group: str | None = None
    reply_dir: Path = Path("/tmp/")
    max_request: int = 65536
    idle_timeout: float = 1.0


# OpenSIPS's DATAGRAM_SOCK_BUF_SIZE: the request and reply limit of mi_datagram
DATAGRAM_BUFFER_SIZE = 65457
DATAGRAM_BUFFER_MIN = 256  # room for any error reply and a small request


@dataclass
class DatagramConfig:
    """`datagram:` (docs/datagram.md): like OpenSIPS mi_datagram."""

    socket: DatagramAddress = field(
        default_factory=lambda: parse_address("udp:127.0.0.1:8080"))
    mode: int = 0o660  # unix socket only
    user: str | None = None
    group: str | None = None
    buffer_size: int = DATAGRAM_BUFFER_SIZE


@dataclass
class ConsumerConfig:
    queue: str
    handler: str  # "pkg.module:function" or a command line
    processes: int = 1
    interval: float = 0.1
    batch: int = 100
    delivery: str = "at-most-once"  # or "at-least-once" (docs/consumers.md; Redis only)
    lease: float = 30.0  # at-least-once: seconds an unacknowledged item stays claimed
    retry: float = 1.0  # at-least-once: seconds before a failed item comes back
    max_deliveries: int = 0  # at-least-once: drop an item claimed more often (0: never)


@dataclass
class EngineConfig:
    """`engine:` (docs/redis.md): where the queues live."""

    backend: str = "shm"  # or "redis"
    url: str | list[str] = "redis://127.0.0.1:6379/0"  # a list: Redis Cluster nodes
    prefix: str = "mqueue-mi"
    timeout: float = 1.0  # seconds per Redis attempt before an operation fails


@dataclass
class Config:
    source: Path | None
    db_url: str | None = None
    shm_size: int = DEFAULT_SHM_SIZE
    shm_name: str = "mqueue-mi"  # the arena's name under /dev/shm (default_shm_name)
    queues: list[QueueSpec] = field(default_factory=list)
    http: HttpConfig | None = None
    fifo: FifoConfig | None = None
    datagram: DatagramConfig | None = None
    consumers: list[ConsumerConfig] = field(default_factory=list)
    log_level: str = "info"
    log_target: str = "stderr"  # or "syslog" (the local syslog daemon)
    pid_file: Path | None = None
    state_dir: Path | None = None  # fallback files of failed saves; default: see runtime
    engine: EngineConfig = field(default_factory=EngineConfig)


def parse_size(text: str | int) -> int:
    """Bytes for "64M", "512K", "1G", "65536" or an int; ValueError for anything else."""
    if isinstance(text, bool):
        raise ValueError(f"not a size: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"negative size: {text}")
        return text
    if isinstance(text, str):
        m = _SIZE_RE.match(text)
        if m:
            return int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    raise ValueError(f"not a size: {text!r} (a number with an optional K, M or G suffix)")


def default_shm_name(config_path: Path) -> str:
    """The arena's name when `shm_name` is not set: derived from the configuration file's
    absolute path (symlinks resolved), so a server started again with the same file after
    a crash finds, and adopts, the arena its predecessor left, while servers of different
    files never meet."""
    import hashlib

    digest = hashlib.sha256(str(Path(config_path).resolve()).encode("utf-8", "surrogateescape"))
    return f"mqueue-mi-{digest.hexdigest()[:8]}"


def load_config(path: str | Path) -> Config:
    """Read and validate the YAML file at `path`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([f"{path}: cannot read: {reason}"]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(path, exc)]) from None
    if data is None:
        data = {}  # an empty file is a valid (empty) configuration
    if not isinstance(data, Mapping):
        raise ConfigError([f"{path}: the top level must be a mapping of keys, "
                           f"not {_kind(data)}"])
    return parse_config(data, str(path), path.resolve().parent, source_path=path)


def parse_config(data: Mapping, source: str, base_dir: Path,
                 source_path: Path | None = None) -> Config:
    """Validate an already-parsed mapping; `source` names it in messages, relative paths
    are taken against `base_dir`; `source_path` becomes Config.source."""
    return _Parser(source, Path(base_dir)).parse(data, source_path)


class _Parser:
    """Collects problems while building a Config, so all of them are reported at once."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        self.problems: list[str] = []

    def problem(self, where: str, what: str) -> None:
        self.problems.append(f"{self.source}: {where}: {what}")

    def parse(self, data: Mapping, source_path: Path | None) -> Config:
        cfg = Config(source=source_path)
        for key in data:
            if key not in TOP_LEVEL_KEYS:
                self.problem(repr(key) if not isinstance(key, str) else key,
                             f"unknown key (expected one of: {', '.join(TOP_LEVEL_KEYS)})")
        cfg.db_url = self.db_url(data.get("db_url"))
        if data.get("shm_size") is not None:
            cfg.shm_size = self.size("shm_size", data["shm_size"], minimum=1)
        cfg.shm_name = self.shm_name(data.get("shm_name"), source_path)
        cfg.queues = self.queues(data.get("mqueue"), has_db=cfg.db_url is not None)
        cfg.http = self.section("http", data.get("http"), self.http)
        cfg.fifo = self.section("fifo", data.get("fifo"), self.fifo)
        cfg.datagram = self.section("datagram", data.get("datagram"), self.datagram)
        cfg.consumers = self.consumers(data.get("consumers"), {q.name for q in cfg.queues})
        cfg.log_level = self.log_level(data.get("log_level", "info"))
        cfg.log_target = self.log_target(data.get("log_target", "stderr"))
        cfg.pid_file = self.path("pid_file", data.get("pid_file"), relative_to_base=True)
        cfg.state_dir = self.path("state_dir", data.get("state_dir"), relative_to_base=True)
        cfg.engine = self.engine(data.get("engine"))
        if cfg.engine.backend == "redis":
            for spec in cfg.queues:
                if spec.dbmode != 0:
                    self.problem(f"queue '{spec.name}'",
                                 f"dbmode={spec.dbmode} is refused with the redis engine: its "
                                 f"queues live in Redis and outlive every instance (use 0)")
        else:
            for index, consumer in enumerate(cfg.consumers, 1):
                if consumer.delivery == "at-least-once":
                    self.problem(f"consumers entry {index}: delivery",
                                 "at-least-once needs the redis engine: the shared-memory "
                                 "arena cannot keep an item claimed by a consumer process "
                                 "that may die (its held fetch locks the whole arena)")
            if not any("shm_size" in line for line in self.problems):
                self.arena_room(cfg.shm_size, cfg.queues)
        if self.problems:
            raise ConfigError(self.problems)
        return cfg

    def arena_room(self, size: int, queues: list[QueueSpec]) -> None:
        """shm_size must hold the arena's fixed part (Arena.create refuses it otherwise)."""
        from mi_server.engine.shm.layout import minimum_size

        least = minimum_size(queues)
        if size < least:
            self.problem("shm_size", f"{size} bytes is too small for an arena of "
                                     f"{len(queues)} queue(s): it needs at least {least} "
                                     f"bytes (e.g. {-(-least // 1024)}K), and room for the "
                                     f"items on top")

    # -- top-level values -------------------------------------------------------------

    def shm_name(self, value: Any, source_path: Path | None) -> str:
        if value is None:
            return default_shm_name(source_path if source_path is not None
                                    else self.base_dir / self.source)
        if not isinstance(value, str) or not _SHM_NAME_RE.match(value):
            self.problem("shm_name", f"not a name for /dev/shm: {value!r} (1-200 characters "
                         "of A-Z a-z 0-9 . _ -, not starting with . or -)")
            return "mqueue-mi"
        return value

    def db_url(self, value: Any) -> str | None:
        if value is None:
            return None
        try:
            parsed = parse_db_url(value)
        except BadDbUrl as exc:
            self.problem("db_url", str(exc))
            return None
        if isinstance(parsed, SqliteUrl):
            # Relative SQLite paths are relative to the configuration file, as in OpenSIPS.
            path = parsed.path if parsed.path.is_absolute() else self.base_dir / parsed.path
            return f"sqlite://{path}"
        return value

    def queues(self, value: Any, has_db: bool) -> list[QueueSpec]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem("mqueue", f"must be a list of queue definitions, not {_kind(value)}")
            return []
        specs: list[QueueSpec] = []
        seen: set[str] = set()
        for index, item in enumerate(value, 1):
            spec = self.queue(index, item)
            if spec is None:
                continue
            where = f"queue '{spec.name}'"
            if spec.name in seen:
                self.problem(where, "mqueue redefined (the name is already used)")
                continue
            seen.add(spec.name)
            if spec.dbmode != 0:
                if not has_db:
                    self.problem(where, f"dbmode={spec.dbmode} needs db_url")
                try:
                    check_table_name(spec.name)
                except InvalidTableName as exc:
                    self.problem(where, f"dbmode={spec.dbmode}: {exc}")
            specs.append(spec)
        return specs

    def queue(self, index: int, item: Any) -> QueueSpec | None:
        try:
            if isinstance(item, str):
                attrs: Mapping[str, object] = split_modparam(item)
            elif isinstance(item, Mapping):
                attrs = item
            else:
                self.problem(f"mqueue entry {index}",
                             f"must be a modparam string or a mapping, not {_kind(item)}")
                return None
            return build_spec(attrs)
        except ModparamError as exc:
            where = self.queue_where(index, item)
            for line in exc.problems:
                self.problem(where, line)
            return None

    @staticmethod
    def queue_where(index: int, item: Any) -> str:
        name = None
        if isinstance(item, Mapping):
            name = item.get("name")
        elif isinstance(item, str):
            try:
                name = split_modparam(item).get("name")
            except ModparamError:
                name = None
        if isinstance(name, (str, int)) and not isinstance(name, bool) and name != "":
            return f"queue '{name}'"
        return f"mqueue entry {index} ({item!r})"

    def log_level(self, value: Any) -> str:
        if isinstance(value, str) and value.lower() in LOG_LEVELS:
            return value.lower()
        self.problem("log_level", f"bad level {value!r} (expected one of: {', '.join(LOG_LEVELS)})")
        return "info"

    def log_target(self, value: Any) -> str:
        if value in LOG_TARGETS:
            return value
        self.problem("log_target",
                     f"bad target {value!r} (expected one of: {', '.join(LOG_TARGETS)})")
        return "stderr"

    # -- sections ---------------------------------------------------------------------

    def engine(self, value: Any) -> EngineConfig:
        cfg = EngineConfig()
        if value is None:
            return cfg
        if not isinstance(value, Mapping):
            self.problem("engine", f"must be a mapping, not {_kind(value)}")
            return cfg
        self.known_keys("engine", value, ("backend", "url", "prefix", "timeout"))
        backend = value.get("backend", "shm")
        if backend not in ENGINE_BACKENDS:
            self.problem("engine.backend", f"bad backend {backend!r} (expected one of: "
                                           f"{', '.join(ENGINE_BACKENDS)})")
        else:
            cfg.backend = backend
        if "url" in value:
            url = value["url"]
            urls = url if isinstance(url, list) else [url]
            single_without_scheme = isinstance(url, str) and "://" not in url
            if not urls or single_without_scheme or not all(self.redis_url(u) for u in urls):
                self.problem("engine.url", f"bad Redis URL {url!r} (redis://host:port/db, "
                                           f"rediss://..., unix:///path, or a list of "
                                           f"cluster nodes host:port)")
            else:
                cfg.url = url
        if "prefix" in value:
            prefix = value["prefix"]
            if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
                self.problem("engine.prefix", f"must be a non-empty string without braces "
                                              f"(they are Redis Cluster hash tags), not "
                                              f"{prefix!r}")
            else:
                cfg.prefix = prefix
        if "timeout" in value:
            cfg.timeout = self.positive("engine.timeout", value["timeout"])
        return cfg

    @staticmethod
    def redis_url(url: Any) -> bool:
        if not isinstance(url, str) or not url:
            return False
        scheme, sep, rest = url.partition("://")
        if not sep:  # a cluster node as host:port
            host, _, port = url.rpartition(":")
            return bool(host) and port.isdigit()
        return scheme in REDIS_SCHEMES and bool(rest)

    def section(self, name: str, value: Any, build: Callable[[Mapping], Any]) -> Any:
        """None when omitted or `enabled: false`; otherwise the built section."""
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.problem(name, f"must be a mapping, not {_kind(value)}")
            return None
        enabled = value.get("enabled", True)
        if not isinstance(enabled, bool):
            self.problem(f"{name}.enabled", f"must be true or false, not {enabled!r}")
            return None
        if not enabled:
            return None
        return build(value)

    def http(self, m: Mapping) -> HttpConfig:
        cfg = HttpConfig()
        self.known_keys("http", m, ("enabled", "listen", "root", "workers", "max_request",
                                    "auth", "allowed_origins", "server_names", "html",
                                    "metrics", "health"))
        if "listen" in m:
            parsed = self.listen(m["listen"])
            if parsed:
                cfg.host, cfg.port = parsed
        if "root" in m:
            root = m["root"]
            stripped = root.strip("/") if isinstance(root, str) else None
            if not stripped or not _HTTP_ROOT_RE.match(stripped):
                self.problem("http.root", f"bad URL path {root!r} (e.g. mi)")
            else:
                cfg.root = stripped
        if "workers" in m:
            cfg.workers = self.integer("http.workers", m["workers"], minimum=1)
        if "max_request" in m:
            cfg.max_request = self.size("http.max_request", m["max_request"], minimum=1)
        if m.get("auth") is not None:
            cfg.auth = self.auth(m["auth"])
        cfg.allowed_origins, cfg.server_names = self.browser_rules(m)
        if "html" in m:
            cfg.html = self.section("http.html", m["html"], self.html)
        if cfg.html is not None and cfg.html.root == cfg.root:
            self.problem("http.html.root", f"must differ from http.root ({cfg.root!r})")
        if "metrics" in m:
            cfg.metrics = self.section("http.metrics", m["metrics"], self.metrics)
        if "health" in m:
            cfg.health = self.health(m["health"])
        taken = {cfg.root: "http.root"}
        if cfg.html is not None:
            taken[cfg.html.root] = "http.html.root"
        for key, page in (("http.metrics.root", cfg.metrics), ("http.health", cfg.health)):
            if page is None:
                continue
            if page.root in taken or page.root.startswith(cfg.root + "/"):
                self.problem(key, f"{page.root!r} is already {taken.get(page.root, 'http.root')}")
            taken[page.root] = key
        for key, page in (("http.metrics.auth", cfg.metrics), ("http.health.auth", cfg.health)):
            if page is not None and page.auth and cfg.auth is None:
                self.problem(key, "true needs http.auth (the credentials it asks for)")
        return cfg

    def page_root(self, where: str, value: Any, example: str) -> str | None:
        stripped = value.strip("/") if isinstance(value, str) else None
        if not stripped or not _HTTP_ROOT_RE.match(stripped):
            self.problem(where, f"bad URL path {value!r} (e.g. {example})")
            return None
        return stripped

    def flag(self, where: str, value: Any) -> bool:
        if not isinstance(value, bool):
            self.problem(where, f"must be true or false, not {value!r}")
            return False
        return value

    def metrics(self, m: Mapping) -> MetricsConfig:
        self.known_keys("http.metrics", m, ("enabled", "root", "prefix", "delimiter",
                                            "group_mode", "group_label", "statistics",
                                            "auth"))
        kw: dict[str, Any] = {}
        if "root" in m:
            root = self.page_root("http.metrics.root", m["root"], "metrics")
            if root:
                kw["root"] = root
        for key in ("prefix", "delimiter", "group_label"):
            if key in m:
                value = m[key]
                if not isinstance(value, str) or (key == "group_label" and not
                                                  re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", value)):
                    self.problem(f"http.metrics.{key}", f"bad value {value!r}")
                elif key == "group_label" and (value == "queue" or value.startswith("__")):
                    # "queue" is the per-queue series' own label; "__" names are Prometheus's
                    self.problem("http.metrics.group_label",
                                 f"{value!r} is taken (\"queue\" labels the per-queue "
                                 f"series; names starting with \"__\" are Prometheus's)")
                else:
                    kw[key] = value
        if "group_mode" in m:
            mode = m["group_mode"]
            if mode not in (0, 1, 2) or isinstance(mode, bool):
                self.problem("http.metrics.group_mode", f"must be 0, 1 or 2, not {mode!r}")
            else:
                kw["group_mode"] = mode
        if "statistics" in m:
            value = m["statistics"]
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not names or \
                    not all(isinstance(n, str) and n for n in names):
                self.problem("http.metrics.statistics",
                             f"must be \"all\", a name, a \"group:\" or a list of them, "
                             f"not {value!r}")
            else:
                kw["statistics"] = tuple(names)
        if "auth" in m:
            kw["auth"] = self.flag("http.metrics.auth", m["auth"])
        return MetricsConfig(**kw)

    def health(self, value: Any) -> HealthConfig | None:
        """A root (string), null (off), or {root, auth}."""
        if value is None:
            return None
        if isinstance(value, str):
            root = self.page_root("http.health", value, "health")
            return HealthConfig(root) if root else HealthConfig()
        if not isinstance(value, Mapping):
            self.problem("http.health", f"must be a path, null or {{root, auth}}, not {value!r}")
            return HealthConfig()
        self.known_keys("http.health", value, ("root", "auth"))
        root = self.page_root("http.health.root", value.get("root", "health"), "health")
        return HealthConfig(root or "health",
                            self.flag("http.health.auth", value.get("auth", False)))

    def html(self, m: Mapping) -> HtmlConfig:
        cfg = HtmlConfig()
        self.known_keys("http.html", m, ("enabled", "root", "side_effects"))
        if "root" in m:
            root = m["root"]
            stripped = root.strip("/") if isinstance(root, str) else None
            if not stripped or not _HTTP_ROOT_RE.match(stripped):
                self.problem("http.html.root", f"bad URL path {root!r} (e.g. html)")
            else:
                cfg.root = stripped
        if "side_effects" in m:
            if not isinstance(m["side_effects"], bool):
                self.problem("http.html.side_effects",
                             f"must be true or false, not {m['side_effects']!r}")
            else:
                cfg.side_effects = m["side_effects"]
        return cfg

    def browser_rules(self, m: Mapping) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """http.allowed_origins and http.server_names (see mi_server.http.guard)."""
        from mi_server.http.guard import check_origins

        lists = []
        for key in ("allowed_origins", "server_names"):
            value = m.get(key)
            if value is None:
                lists.append(())
                continue
            if not isinstance(value, list):
                self.problem(f"http.{key}", f"must be a list, not {_kind(value)}")
                lists.append(())
                continue
            if key == "allowed_origins":
                for line in check_origins(value):
                    self.problem("http.allowed_origins", line)
            else:
                for name in value:
                    if not isinstance(name, str) or not _SERVER_NAME_RE.match(name):
                        self.problem("http.server_names",
                                     f"bad host name {name!r} (e.g. mi.example.org)")
            lists.append(tuple(str(v) for v in value))
        return lists[0], lists[1]

    def listen(self, value: Any) -> tuple[str, int] | None:
        text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) \
            else None
        host, sep, port_text = (text or "").rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]  # [::1]:8888
        port = int(port_text) if port_text.isdigit() else -1
        ok = bool(sep) and 1 <= port <= 65535 and bool(host)
        if ok:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                ok = host == "localhost" or bool(re.fullmatch(r"[A-Za-z0-9.-]+", host))
        if not ok:
            self.problem("http.listen",
                         f"bad address {value!r} (expected host:port, e.g. 127.0.0.1:8888)")
            return None
        return host, port

    def auth(self, value: Any) -> tuple[str, str] | None:
        if not isinstance(value, Mapping):
            self.problem("http.auth", "must be a mapping {username: ..., password: ...}")
            return None
        self.known_keys("http.auth", value, ("username", "password"))
        user, password = value.get("username"), value.get("password")
        if not isinstance(user, str) or not user or ":" in user:
            self.problem("http.auth.username", f"must be a non-empty string without ':', "
                                               f"not {user!r}")
            return None
        if not isinstance(password, str):
            self.problem("http.auth.password", f"must be a string, not {password!r}")
            return None
        return user, password

    def fifo(self, m: Mapping) -> FifoConfig:
        cfg = FifoConfig()
        self.known_keys("fifo", m, ("enabled", "path", "mode", "user", "group", "reply_dir",
                                    "max_request", "idle_timeout"))
        cfg.path = self.path("fifo.path", m.get("path"), required=False) or cfg.path
        if "mode" in m:
            cfg.mode = self.mode(m["mode"])
        cfg.user, cfg.group = self.owner("fifo", m)
        cfg.reply_dir = self.path("fifo.reply_dir", m.get("reply_dir")) or cfg.reply_dir
        if "max_request" in m:
            cfg.max_request = self.size("fifo.max_request", m["max_request"], minimum=1)
        if "idle_timeout" in m:
            cfg.idle_timeout = self.positive("fifo.idle_timeout", m["idle_timeout"])
        return cfg

    def owner(self, where: str, m: Mapping) -> tuple[str | None, str | None]:
        """`user` and `group`: a name or a number each, or absent."""
        found: list[str | None] = []
        for key in ("user", "group"):
            value = m.get(key)
            if value is not None and not (isinstance(value, (str, int))
                                          and not isinstance(value, bool) and value != ""):
                self.problem(f"{where}.{key}", f"must be a name or a number, not {value!r}")
                value = None
            found.append(None if value is None else str(value))
        return found[0], found[1]

    def datagram(self, m: Mapping) -> DatagramConfig:
        cfg = DatagramConfig()
        self.known_keys("datagram", m, ("enabled", "socket", "mode", "user", "group",
                                        "buffer_size"))
        if "socket" in m:
            try:
                cfg.socket = parse_address(m["socket"])
            except BadAddress as exc:
                self.problem("datagram.socket", str(exc))
        if "mode" in m:
            cfg.mode = self.mode(m["mode"], "datagram.mode")
        cfg.user, cfg.group = self.owner("datagram", m)
        if not cfg.socket.is_unix:
            for key in ("mode", "user", "group"):
                if m.get(key) is not None:
                    self.problem(f"datagram.{key}", f"applies to a unix socket only, not to "
                                                    f"{cfg.socket}")
        if "buffer_size" in m:
            size = self.size("datagram.buffer_size", m["buffer_size"],
                             minimum=DATAGRAM_BUFFER_MIN)
            if size > UDP_PAYLOAD_MAX:
                self.problem("datagram.buffer_size",
                             f"{size} bytes is more than one datagram holds over UDP "
                             f"(at most {UDP_PAYLOAD_MAX})")
            else:
                cfg.buffer_size = max(size, DATAGRAM_BUFFER_MIN)
        return cfg

    def mode(self, value: Any, where: str = "fifo.mode") -> int:
        # "0660" (a string) is octal; YAML 1.1 already reads a bare 0660 as octal 432.
        # Only permission bits make sense for a FIFO, which also catches a bare 660
        # (decimal 660 is 0o1224): the user meant "0660".
        if isinstance(value, str) and re.fullmatch(r"0?o?[0-7]{1,4}", value):
            mode = int(value.replace("o", ""), 8)
        elif isinstance(value, int) and not isinstance(value, bool):
            mode = value
        else:
            mode = -1
        if not 0 <= mode <= 0o777:
            self.problem(where, f"bad mode {value!r} (an octal string such as \"0660\")")
            return 0o660
        return mode

    def consumers(self, value: Any, queue_names: set[str]) -> list[ConsumerConfig]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem("consumers", f"must be a list, not {_kind(value)}")
            return []
        result = []
        for index, item in enumerate(value, 1):
            where = f"consumers entry {index}"
            if not isinstance(item, Mapping):
                self.problem(where, f"must be a mapping, not {_kind(item)}")
                continue
            before = len(self.problems)
            self.known_keys(where, item, ("queue", "processes", "interval", "batch",
                                          "handler", "delivery", "lease", "retry",
                                          "max_deliveries"))
            queue, handler = item.get("queue"), item.get("handler")
            if not isinstance(queue, str) or queue not in queue_names:
                self.problem(f"{where}: queue", f"{queue!r} is not a defined mqueue")
            if not isinstance(handler, str) or not handler.strip():
                self.problem(f"{where}: handler",
                             "required: \"pkg.module:function\" or a command line")
            consumer = ConsumerConfig(queue=str(queue), handler=str(handler))
            if "processes" in item:
                consumer.processes = self.integer(f"{where}: processes", item["processes"],
                                                  minimum=1)
            if "interval" in item:
                # > 0: an idle consumer sleeps this long; 0 would spin on an empty queue
                consumer.interval = self.positive(f"{where}: interval", item["interval"])
            if "batch" in item:
                consumer.batch = self.integer(f"{where}: batch", item["batch"], minimum=1)
            self.delivery(where, item, consumer)
            if len(self.problems) == before:
                result.append(consumer)
        return result

    def delivery(self, where: str, item: Mapping, consumer: ConsumerConfig) -> None:
        """`delivery` and the keys that only at-least-once delivery reads."""
        if "delivery" in item:
            if item["delivery"] not in DELIVERIES:
                self.problem(f"{where}: delivery", f"must be one of {', '.join(DELIVERIES)}, "
                             f"not {item['delivery']!r}")
            else:
                consumer.delivery = item["delivery"]
        extra = [k for k in ("lease", "retry", "max_deliveries") if k in item]
        if consumer.delivery != "at-least-once":
            for key in extra:
                self.problem(f"{where}: {key}", "only with delivery: at-least-once")
            return
        if "lease" in item:
            consumer.lease = self.positive(f"{where}: lease", item["lease"])
        if "retry" in item:
            consumer.retry = self.positive(f"{where}: retry", item["retry"])
        if "max_deliveries" in item:
            consumer.max_deliveries = self.integer(f"{where}: max_deliveries",
                                                   item["max_deliveries"], minimum=0)

    # -- value helpers ----------------------------------------------------------------

    def known_keys(self, where: str, m: Mapping, allowed: tuple[str, ...]) -> None:
        for key in m:
            if key not in allowed:
                self.problem(f"{where}.{key}" if "entry" not in where else f"{where}: {key}",
                             f"unknown key (expected one of: {', '.join(allowed)})")

    def integer(self, where: str, value: Any, minimum: int) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        self.problem(where, f"must be an integer >= {minimum}, not {value!r}")
        return minimum

    def positive(self, where: str, value: Any) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
        self.problem(where, f"must be a number > 0, not {value!r}")
        return 1.0

    def size(self, where: str, value: Any, minimum: int) -> int:
        try:
            result = parse_size(value)
        except ValueError as exc:
            self.problem(where, str(exc))
            return minimum
        if result < minimum:
            self.problem(where, f"must be at least {minimum} bytes, not {value!r}")
        return result

    def path(self, where: str, value: Any, required: bool = False,
             relative_to_base: bool = False) -> Path | None:
        if value is None:
            if required:
                self.problem(where, "required")
            return None
        if not isinstance(value, str) or not value:
            self.problem(where, f"must be a non-empty path, not {value!r}")
            return None
        path = Path(value)
        if relative_to_base and not path.is_absolute():
            path = self.base_dir / path
        return path


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key repeated in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable key: let the base class report it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping)


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is not None:
        return f"{path}: line {mark.line + 1}, column {mark.column + 1}: YAML error: {problem}"
    return f"{path}: YAML error: {problem}"


def _kind(value: Any) -> str:
    return {list: "a list", dict: "a mapping", str: "a string"}.get(
        type(value), type(value).__name__)
