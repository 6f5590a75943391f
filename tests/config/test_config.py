"""YAML configuration loading (docs/configuration.md): defaults, both queue forms, every
error class."""

from __future__ import annotations

from pathlib import Path

import pytest

from mi_server.config import (
    Config,
    ConfigError,
    FifoConfig,
    HttpConfig,
    load_config,
    parse_config,
    parse_size,
)
from mi_server.engine.spec import QueueSpec

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mq.yaml"
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_empty_file_is_an_empty_configuration(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""))
    assert cfg.queues == [] and cfg.http is None and cfg.fifo is None
    assert cfg.shm_size == 64 * 1024 * 1024 and cfg.log_level == "info"
    assert cfg.db_url is None and cfg.pid_file is None and cfg.consumers == []


def test_full_example_from_config_md_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, """
db_url: mysql://user:pass@127.0.0.1:3306/opensips
shm_size: 16M
mqueue:
  - "name=myq;size=20;addmode=2;dbmode=1"
  - {name: qaz, size: 10000, addmode: 0, dbmode: 0}
http:
  listen: 0.0.0.0:9000
  root: /mi/
  workers: 4
  max_request: 1K
  auth: {username: admin, password: secret}
fifo:
  path: /tmp/x_fifo
  mode: "0600"
  user: null
  group: null
  reply_dir: /tmp/r/
  max_request: 64K
  idle_timeout: 2.5
consumers:
  - {queue: myq, processes: 2, interval: 0.5, batch: 10, handler: "pkg.module:function"}
log_level: DEBUG
pid_file: run/mq.pid
"""))
    assert cfg.db_url == "mysql://user:pass@127.0.0.1:3306/opensips"
    assert cfg.shm_size == 16 * 1024 * 1024
    assert cfg.queues == [QueueSpec("myq", 20, 2, 1), QueueSpec("qaz", 10000, 0, 0)]
    assert cfg.http == HttpConfig("0.0.0.0", 9000, "mi", 4, 1024, ("admin", "secret"))
    assert cfg.fifo == FifoConfig(Path("/tmp/x_fifo"), 0o600, None, None, Path("/tmp/r"),
                                  65536, 2.5)
    (consumer,) = cfg.consumers
    assert (consumer.queue, consumer.processes, consumer.interval, consumer.batch,
            consumer.handler) == ("myq", 2, 0.5, 10, "pkg.module:function")
    assert cfg.log_level == "debug"
    assert cfg.pid_file == tmp_path / "run/mq.pid"
    assert isinstance(cfg, Config) and cfg.source == tmp_path / "mq.yaml"


def test_sections_default_and_can_be_disabled(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "http: {}\nfifo: {}\n"))
    assert cfg.http == HttpConfig() and cfg.fifo == FifoConfig()
    cfg = load_config(write(tmp_path, "http: {enabled: false}\nfifo: {enabled: false}\n"))
    assert cfg.http is None and cfg.fifo is None


@pytest.mark.parametrize(("url", "expected"), [
    ("sqlite:///var/tmp/q.db", "sqlite:///var/tmp/q.db"),
    ("sqlite:////var/tmp/q.db", "sqlite:///var/tmp/q.db"),
    ("sqlite://q.db", "sqlite://{base}/q.db"),
    ("sqlite://var/q.db", "sqlite://{base}/var/q.db"),
])
def test_sqlite_paths_follow_db_sqlite_rules(tmp_path: Path, url: str, expected: str) -> None:
    cfg = load_config(write(tmp_path, f"db_url: {url}\n"))
    assert cfg.db_url == expected.format(base=tmp_path.resolve())


def test_parse_config_takes_relative_paths_against_base_dir(tmp_path: Path) -> None:
    cfg = parse_config({"db_url": "sqlite://a.db", "mqueue": ["name=q"]}, "inline", tmp_path)
    assert cfg.db_url == f"sqlite://{tmp_path}/a.db" and cfg.source is None


@pytest.mark.parametrize(("text", "value"), [
    ("65536", 65536), (65536, 65536), ("64K", 65536), ("64k", 65536), ("64M", 64 << 20),
    ("2G", 2 << 30), ("0", 0),
])
def test_parse_size(text: str | int, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["64KB", "1.5M", "-1", -1, "M", "", True, None, "64 T"])
def test_parse_size_refuses_garbage(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)  # type: ignore[arg-type]


ERRORS = [
    ("colour: blue\n", "colour: unknown key"),
    ("mqueue: [\"name=q;size=x\"]\n", "queue 'q': size: not an integer: 'x'"),
    ("mqueue: [{name: q, size: x}]\n", "queue 'q': size: not an integer: 'x'"),
    ("mqueue: [\"name=q;foo=1\"]\n", "queue 'q': unknown attribute 'foo'"),
    ("mqueue: [\"size=3\"]\n", "mqueue entry 1 ('size=3'): name: missing"),
    ("mqueue: [\"name=q,size=3\"]\n", "',' is not a separator"),
    ("mqueue: [\"name=q\", {name: q}]\n", "queue 'q': mqueue redefined"),
    ("mqueue: [\"name=q;dbmode=1\"]\n", "queue 'q': dbmode=1 needs db_url"),
    ("db_url: sqlite:///tmp/x.db\nmqueue: [\"name=a-b;dbmode=2\"]\n",
     "queue 'a-b': dbmode=2: queue name 'a-b' cannot be a table name"),
    ("db_url: sqlite:///tmp/x.db\nmqueue: [{name: " + "q" * 65 + ", dbmode: 1}]\n",
     "cannot be a table name"),
    ("mqueue: [42]\n", "mqueue entry 1: must be a modparam string or a mapping"),
    ("mqueue: name=q\n", "mqueue: must be a list"),
    ("db_url: postgres://x/y\n", "db_url: unsupported scheme"),
    ("db_url: mysql://root@127.0.0.1\n", "db_url: no database name"),
    ("db_url: mysql://root@127.0.0.1:99999/db\n", "db_url: bad port"),
    ("db_url: sqlite://\n", "db_url: no file name"),
    ("shm_size: 64T\n", "shm_size: not a size: '64T'"),
    ("shm_size: 0\n", "shm_size: must be at least 1 bytes"),
    ("shm_name: ../etc\n", "shm_name: not a name for /dev/shm: '../etc'"),
    ("shm_name: .hidden\n", "shm_name: not a name for /dev/shm"),
    ("shm_name: 42\n", "shm_name: not a name for /dev/shm: 42"),
    ("http: {listen: 127.0.0.1}\n", "http.listen: bad address '127.0.0.1'"),
    ("http: {listen: '127.0.0.1:0'}\n", "http.listen: bad address"),
    ("http: {listen: 'local host:80'}\n", "http.listen: bad address"),
    ("http: {listen: ':8888'}\n", "http.listen: bad address"),
    ("http: {workers: 0}\n", "http.workers: must be an integer >= 1"),
    ("http: {max_request: 1X}\n", "http.max_request: not a size"),
    ("http: {root: 'a b'}\n", "http.root: bad URL path"),
    ("http: {port: 80}\n", "http.port: unknown key"),
    ("http: {enabled: maybe}\n", "http.enabled: must be true or false"),
    ("http: {auth: {username: admin}}\n", "http.auth.password: must be a string"),
    ("http: [1]\n", "http: must be a mapping"),
    ("http: {html: {root: mi}}\n", "http.html.root: must differ from http.root ('mi')"),
    ("http: {html: {root: 'a b'}}\n", "http.html.root: bad URL path"),
    ("http: {html: {side_effects: 1}}\n", "http.html.side_effects: must be true or false"),
    ("http: {html: {colour: 1}}\n", "http.html.colour: unknown key"),
    ("fifo: {mode: '0999'}\n", "fifo.mode: bad mode '0999'"),
    ("fifo: {mode: 660}\n", "fifo.mode: bad mode 660"),
    ("fifo: {mode: rw}\n", "fifo.mode: bad mode 'rw'"),
    ("fifo: {idle_timeout: 0}\n", "fifo.idle_timeout: must be a number > 0"),
    ("fifo: {path: ''}\n", "fifo.path: must be a non-empty path"),
    ("fifo: {bogus: 1}\n", "fifo.bogus: unknown key"),
    ("consumers: [{queue: nope, handler: 'a:b'}]\n",
     "consumers entry 1: queue: 'nope' is not a defined mqueue"),
    ("mqueue: [name=q]\nconsumers: [{queue: q}]\n", "consumers entry 1: handler: required"),
    ("engine: {backend: memcached}\n", "engine.backend: bad backend 'memcached'"),
    ("engine: {url: 'http://x'}\n", "engine.url: bad Redis URL 'http://x'"),
    ("engine: {url: '127.0.0.1:6379'}\n", "engine.url: bad Redis URL"),
    ("engine: {url: []}\n", "engine.url: bad Redis URL"),
    ("engine: {prefix: 'a{b}'}\n", "engine.prefix: must be a non-empty string without braces"),
    ("engine: {timeout: 0}\n", "engine.timeout: must be a number > 0"),
    ("engine: {host: x}\n", "engine.host: unknown key"),
    ("engine: redis\n", "engine: must be a mapping"),
    ("db_url: sqlite:///tmp/x.db\nengine: {backend: redis}\nmqueue: [\"name=q;dbmode=1\"]\n",
     "queue 'q': dbmode=1 is refused with the redis engine: its queues live in Redis"),
    ("mqueue: [name=q]\nconsumers: [{queue: q, handler: x, batch: 0}]\n",
     "consumers entry 1: batch: must be an integer >= 1"),
    ("mqueue: [name=q]\nconsumers: [{queue: q, handler: x, interval: 0}]\n",
     "consumers entry 1: interval: must be a number > 0, not 0"),
    ("log_target: file\n", "log_target: bad target 'file'"),
    ("state_dir: 7\n", "state_dir: must be a non-empty path"),
    ("log_level: loud\n", "log_level: bad level 'loud'"),
    ("pid_file: [1]\n", "pid_file: must be a non-empty path"),
    ("mqueue: [\n", "line 2, column 1: YAML error"),
    ("a: 1\na: 2\n", "line 2, column 1: YAML error: duplicate key 'a'"),
    ("- 1\n", "the top level must be a mapping of keys, not a list"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_each_mistake_is_one_line_naming_file_and_key(tmp_path: Path, text: str,
                                                      message: str) -> None:
    problems = problems_of(tmp_path, text)
    path = str(tmp_path / "mq.yaml")
    assert any(message in p for p in problems), problems
    assert all(p.startswith(path + ": ") and "\n" not in p for p in problems), problems


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "colour: 1\nshm_size: x\nmqueue: ['name=q;size=y', "
                                     "'name=r;dbmode=1']\nlog_level: 7\n")
    assert len(problems) == 5, problems


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.yaml")
    assert info.value.problems == [f"{tmp_path}/absent.yaml: cannot read: "
                                   "No such file or directory"]


def test_consumer_example_is_valid() -> None:
    cfg = load_config(ROOT / "examples" / "consumer.yaml")
    assert [c.queue for c in cfg.consumers] == ["orders", "audit"]


def test_default_example_is_valid_and_uses_relative_sqlite() -> None:
    cfg = load_config(ROOT / "examples" / "default.yaml")
    assert cfg.db_url == f"sqlite://{ROOT}/examples/var/mqueue-mi.db"
    assert cfg.http == HttpConfig("127.0.0.1", 8888, "mi")
    assert cfg.fifo is not None and cfg.fifo.path == Path("/tmp/opensips_fifo")
    assert cfg.fifo.reply_dir == Path("/tmp/")
    assert {q.addmode for q in cfg.queues} >= {0, 2} and any(q.dbmode == 1 for q in cfg.queues)
    assert any(q.size > 0 for q in cfg.queues)


def test_shm_name_defaults_to_one_derived_from_the_file_s_absolute_path(tmp_path: Path,
                                                                         monkeypatch) -> None:
    import hashlib

    from mi_server.config import default_shm_name

    a = write(tmp_path, "mqueue: [name=q]\n")
    other = tmp_path / "other"
    other.mkdir()
    b = write(other, "mqueue: [name=q]\n")
    name = load_config(a).shm_name
    assert name == "mqueue-mi-" + hashlib.sha256(str(a.resolve()).encode()).hexdigest()[:8]
    assert name == default_shm_name(a)
    monkeypatch.chdir(tmp_path)
    assert load_config(a.name).shm_name == name  # a relative spelling: the same arena
    assert load_config(b).shm_name != name  # another file: another arena
    assert load_config(write(tmp_path, "shm_name: my-arena.1\n")).shm_name == "my-arena.1"


def test_the_web_page_is_on_by_default_and_can_be_turned_off(tmp_path: Path) -> None:
    on = load_config(write(tmp_path, "http: {}\n")).http
    assert on is not None and on.html is not None
    assert (on.html.root, on.html.side_effects) == ("html", True)
    assert len(on.html.secret) == 32
    off = load_config(write(tmp_path, "http: {html: {enabled: false}}\n")).http
    assert off is not None and off.html is None


def test_engine_section_defaults_to_shm_and_reads_redis_settings(tmp_path: Path) -> None:
    assert parse_config({}, "inline", tmp_path).engine.backend == "shm"
    cfg = parse_config({"engine": {"backend": "redis", "url": "unix:///run/redis.sock",
                                   "prefix": "site-a", "timeout": 0.5}}, "inline", tmp_path)
    assert (cfg.engine.backend, cfg.engine.url, cfg.engine.prefix, cfg.engine.timeout) == (
        "redis", "unix:///run/redis.sock", "site-a", 0.5)
    nodes = ["127.0.0.1:7000", "redis://127.0.0.1:7001"]
    assert parse_config({"engine": {"backend": "redis", "url": nodes}}, "inline",
                        tmp_path).engine.url == nodes


def test_at_least_once_delivery_is_read_with_the_redis_engine(tmp_path: Path) -> None:
    consumer = {"queue": "q", "handler": "x", "delivery": "at-least-once", "lease": 5,
                "retry": 0.5, "max_deliveries": 3}
    cfg = parse_config({"mqueue": ["name=q"], "engine": {"backend": "redis"},
                        "consumers": [consumer, {"queue": "q", "handler": "y"}]},
                       "inline", tmp_path)
    first, second = cfg.consumers
    assert (first.delivery, first.lease, first.retry, first.max_deliveries) == (
        "at-least-once", 5.0, 0.5, 3)
    assert (second.delivery, second.lease) == ("at-most-once", 30.0)


def test_at_least_once_delivery_is_refused_on_the_shm_engine(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "mqueue: [name=q]\nconsumers: [{queue: q, handler: x, "
                                     "delivery: at-least-once}]\n")
    assert len(problems) == 1
    assert problems[0].endswith("consumers entry 1: delivery: at-least-once needs the redis "
                                "engine: the shared-memory arena cannot keep an item claimed "
                                "by a consumer process that may die (its held fetch locks the "
                                "whole arena)")


@pytest.mark.parametrize(("entry", "problem"), [
    ("delivery: maybe", "delivery: must be one of at-most-once, at-least-once, not 'maybe'"),
    ("lease: 5", "lease: only with delivery: at-least-once"),
    ("delivery: at-least-once, lease: 0", "lease: must be a number > 0, not 0"),
    ("delivery: at-least-once, retry: -1", "retry: must be a number > 0, not -1"),
    ("delivery: at-least-once, max_deliveries: -1",
     "max_deliveries: must be an integer >= 0, not -1"),
])
def test_delivery_mistakes_are_one_line_each(tmp_path: Path, entry: str, problem: str) -> None:
    problems = problems_of(tmp_path, "engine: {backend: redis}\nmqueue: [name=q]\n"
                                     f"consumers: [{{queue: q, handler: x, {entry}}}]\n")
    assert len(problems) == 1 and problems[0].endswith(f"consumers entry 1: {problem}"), problems
