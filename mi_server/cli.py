"""The `mi-server` command line: `mi-server -c FILE [--check | --create-tables]`.

`-c` is required: a server that silently picks up some file is hard to reason about; the
README's start command names examples/default.yaml explicitly.  `--help` is the user's
summary (options, where the configuration reference is, signals, environment switches,
exit codes); tests/config/test_cli.py pins what it names.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mi_server import SERVER_NAME, __version__
from mi_server.config import Config, ConfigError, load_config

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


USAGE = """\
mi-server -c FILE [--check | --create-tables]
       mi-server --version | --help"""

DESCRIPTION = """\
The OpenSIPS Management Interface of the mqueue module (JSON-RPC over HTTP, a FIFO
and datagrams) over shared-memory or Redis queues. Runs in the foreground."""

EPILOG = """\
configuration:
  every key of FILE, its default and its errors: docs/configuration.md
  (a start-ready example: examples/default.yaml)

signals:
  SIGTERM, SIGINT, SIGHUP  stop in order: finish the requests in flight, stop the
                           consumers, save the dbmode queues, remove the FIFO and socket
                           (the MI command `kill` does the same)
  SIGKILL                  no save: the next start with FILE adopts the queues left
                           in shared memory (docs/operations.md)

environment:
  MQMI_FIFO_FASTPATH=0     serve the FIFO without its compiled fast path
  MQMI_HTTP_FASTPATH=0     serve HTTP without its compiled fast path
  MQMI_DATAGRAM_FASTPATH=0 serve the datagram socket without its compiled fast path
  MQMI_MI_COMPILED=0       answer mq_get_size, mq_get_sizes and mq_fetch in Python only
  MQMI_ENGINE_SPEEDUPS=0   create the arena without the engine's C part (flock, Python)
  NOTIFY_SOCKET            set by systemd (Type=notify): READY=1 once every transport
                           answers, STOPPING=1 at the stop

exit status:
  0  stopped cleanly (or --check found nothing wrong)
  1  invalid configuration, a start-up failure, or a save at the stop that went to
     the fallback file instead of the database
  2  usage error"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """One line per option whatever the terminal's width (the texts are written for 88)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=28, width=100)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mi-server", add_help=False, usage=USAGE, description=DESCRIPTION, epilog=EPILOG,
        formatter_class=_HelpFormatter)
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="the YAML configuration file (required)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true",
                        help="validate FILE and this machine for it, then exit (0 valid, 1 not)")
    action.add_argument("--create-tables", action="store_true",
                        help="create the missing tables of the dbmode queues, then exit")
    parser.add_argument("--version", action="version", version=f"{SERVER_NAME} {__version__}",
                        help="print the version and exit")
    parser.add_argument("-h", "--help", action="help", help="print this help and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(args_list)
    if not args.config:
        parser.print_usage(sys.stderr)
        print("mi-server: error: -c/--config FILE is required "
              "(e.g. mi-server -c examples/default.yaml)", file=sys.stderr)
        return EXIT_USAGE
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return EXIT_INVALID
    if args.check:
        return check(args.config, cfg)
    if args.create_tables:
        return create_tables(cfg)
    from mi_server.runtime import run_server  # imported late: --check needs no runtime

    return run_server(cfg, [sys.argv[0], *args_list])


def check(path: str, cfg: Config) -> int:
    """--check on a valid file: what this machine would refuse, then the warnings."""
    from mi_server.checks import machine_problems, warnings

    problems = machine_problems(cfg)
    for line in problems:
        print(f"{path}: {line}", file=sys.stderr)
    for line in warnings(cfg):
        print(f"{path}: warning: {line}", file=sys.stderr)
    if problems:
        return EXIT_INVALID
    print(f"{path}: configuration OK ({len(cfg.queues)} queue(s))")
    return EXIT_OK


def create_tables(cfg: Config) -> int:
    """Create the table of every queue with a dbmode; print what was done."""
    from mi_server.storage import StorageError, open_storage

    queues = [q for q in cfg.queues if q.dbmode != 0]
    if not queues or cfg.db_url is None:
        print("no queue has a dbmode: nothing to create")
        return EXIT_OK
    storage = open_storage(cfg.db_url)
    status = EXIT_OK
    try:
        for queue in queues:
            try:
                created = storage.create_table(queue.name)
                widened = not created and storage.widen_table(queue.name)
            except StorageError as exc:
                print(f"mi-server: {exc}", file=sys.stderr)
                status = EXIT_INVALID
                continue
            done = "created" if created else \
                "exists, key and val widened to LONGTEXT" if widened else "exists"
            print(f"table '{queue.name}': {done}")
    finally:
        storage.close()
    return status
