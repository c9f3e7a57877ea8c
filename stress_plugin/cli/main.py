"""``stress-runner``: exit 0 when nothing breached, 1 on a breach, 2 on bad input, bad config
or a failed run (the book, the limits or an evaluator could not be had)."""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stress_plugin.core.errors import StressError, log_safe

if TYPE_CHECKING:
    from stress_plugin.service.schedule import Schedule

EXIT_OK, EXIT_BREACH, EXIT_INPUT = 0, 1, 2
DISTRIBUTIONS = ("stress-plugin", "stress-hookspecs", "stress-pack-flash-crash",
                 "stress-pack-history")
"""This repository's distributions, as ``--version`` reports them (the historical pack is
optional: "not installed" without it)."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser(_command(argv))
    args = parser.parse_args(argv)
    if args.command is None:  # bare ``stress-runner``: what it can do, not an error
        parser.print_help()
        return EXIT_OK
    try:
        configure_logging(quiet=args.quiet)
        return int(args.handler(args))
    except StressError as exc:
        print(f"stress-runner: error: {log_safe(str(exc))}", file=sys.stderr)
        return EXIT_INPUT
    except sqlite3.DatabaseError as exc:  # a corrupted store, found after it opened
        print(f"stress-runner: error: environment: STRESS_DB: the store {_db_path()} cannot "
              f"be used: {exc} (restore it from a backup, or move it aside to start afresh)",
              file=sys.stderr)
        return EXIT_INPUT
    except Exception as exc:
        if not type(exc).__module__.startswith("psycopg"):
            raise
        # the PostgreSQL store went away mid-command (psycopg names host and port, never the
        # password; the target is shown redacted)
        print(f"stress-runner: error: environment: STRESS_DB: the store {_db_path()} cannot "
              f"be used: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_INPUT


def _db_path() -> str:
    from stress_plugin.settings import load_settings

    try:
        from stress_plugin.store import redact

        return redact(load_settings().db_path)
    except StressError:
        return "(unknown)"


def configure_logging(*, quiet: bool = False) -> None:
    """stderr, as text (``STRESS_LOG_FORMAT=text``, the default) or one JSON object a line."""
    from stress_plugin.settings import load_settings

    handler = logging.StreamHandler(sys.stderr)
    json_lines = load_settings().stress_log_format == "json"
    handler.setFormatter(JsonFormatter() if json_lines else
                         OpsFormatter("%(asctime)s %(name)s %(level)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, handlers=[handler],
                        force=True)


def _utc(record: logging.LogRecord) -> str:
    """ISO 8601 UTC to the millisecond with a Z: comparable across hosts and zones."""
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class OpsFormatter(logging.Formatter):
    """UTC time, logger name, then the level in lower case, so the runbook's log greps work:
    ``grep "stress_runner"``, ``grep "stress.*error"``, ``grep "KILL_SWITCH triggered"``.
    The message has control characters escaped: what a user typed (a symbol, a reason, a URL)
    can never start a line of its own, such as a forged ``KILL_SWITCH triggered``."""

    def format(self, record: logging.LogRecord) -> str:
        record.level = record.levelname.lower()
        return super().format(record)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = log_safe(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line for log shippers: time, level, logger, message (and the
    traceback as ``exc_info``), so nothing has to parse the text format."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": _utc(record), "level": record.levelname.lower(),
                                "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class _Version(argparse.Action):
    """``--version``: the three distributions' installed versions, looked up only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        for name in DISTRIBUTIONS:
            try:
                print(f"{name} {version(name)}")
            except PackageNotFoundError:
                print(f"{name} not installed")
        parser.exit()


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI. With ``command`` (``_command``'s word) only that command's parser is built:
    argparse makes a formatter and looks up translations for each one, ~0.4 ms a command
    and ~5 ms of every start for all. None or an unknown word builds them all, for the
    help and for argparse's own error."""
    parser = argparse.ArgumentParser(
        prog="stress-runner", description="Flash-Crash Lite intraday stress runner."
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = command if command in COMMANDS else None
    for name, (text, arguments) in COMMANDS.items():
        if chosen in (None, name):
            arguments(commands.add_parser(name, help=text))
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first word that is not an option (no option before
    the command takes a value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def _run_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument("--scenario",
                     help="a discovered scenario name or a scenario YAML path, or several "
                          "comma-separated (default: flash_crash_lite)")
    run.add_argument("--all", action="store_true",
                     help="run every discovered scenario on the same book snapshot")
    run.add_argument("--book", type=Path, help="book file (YAML or JSON); overrides any host")
    run.add_argument("--symbols", help="comma-separated symbols to restrict the book to")
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.add_argument("--top", type=_positive, metavar="N",
                     help="table: only the N symbols with the largest losses")
    run.add_argument("--breaches-only", action="store_true",
                     help="table: only the symbols that breached")
    run.add_argument("--report", type=Path, metavar="FILE.html",
                     help="also write the run's report: one self-contained HTML file")
    run.set_defaults(handler=_run)


def _validate_arguments(validate: argparse.ArgumentParser) -> None:
    validate.add_argument("path", type=Path)
    validate.set_defaults(handler=_validate)


def _scenarios_arguments(scenarios: argparse.ArgumentParser) -> None:
    scenarios.add_argument("--json", action="store_true")
    scenarios.set_defaults(handler=_scenarios)


def _plugins_arguments(plugins: argparse.ArgumentParser) -> None:
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(handler=_plugins)


def _serve_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--book", type=Path,
                       help="book file, re-read at every run; default: the stress_book hook")
    serve.set_defaults(handler=_serve)


def _status_arguments(status: argparse.ArgumentParser) -> None:
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_status)


def _token_arguments(token: argparse.ArgumentParser) -> None:
    token.add_argument("name", help="the operator's name (letters, digits, '_', '.', '-')")
    token.add_argument("role", choices=("viewer", "operator", "risk"))
    token.set_defaults(handler=_token)


def _reset_arguments(reset: argparse.ArgumentParser) -> None:
    reset.add_argument("--reason", required=True, help="why trading may resume (audited)")
    reset.set_defaults(handler=_reset)


def _schedule_arguments(schedule: argparse.ArgumentParser) -> None:
    schedule.add_argument("--from", dest="start", help="ISO 8601 start (default: now)")
    schedule.add_argument("--count", type=int, default=10, help="how many (default 10)")
    schedule.set_defaults(handler=_schedule)


def _alerts_arguments(parser: argparse.ArgumentParser) -> None:
    from stress_plugin.cli import alerts

    alerts.add_arguments(parser)


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "run": ("stress the book once and print the result", _run_arguments),
    "validate": ("check a scenario or book file (JSON by its .json suffix, else YAML); "
                 "lists every problem", _validate_arguments),
    "scenarios": ("list the discovered scenarios", _scenarios_arguments),
    "plugins": ("list the loaded plugins and their hooks", _plugins_arguments),
    "serve": ("the service: hourly scheduler, REST API, metrics", _serve_arguments),
    "status": ("halt, last and next run, and the limits in force with their sources",
               _status_arguments),
    "token": ("make an operator's token and its STRESS_API_TOKENS_FILE line",
              _token_arguments),
    "reset": ("clear the trading halt (audited with your user)", _reset_arguments),
    "schedule": ("print the next scheduled run times (UTC)", _schedule_arguments),
    "alerts": ("the alert outbox of every sink: list, flush, retry, send a test",
               _alerts_arguments),
}
"""Each command: its help line and what adds its arguments and handler, in help order."""


def _run(args: argparse.Namespace) -> int:
    from stress_plugin.runner import DEFAULT_SCENARIO, StressRunner
    from stress_plugin.settings import load_settings
    from stress_plugin.store import Store

    settings = load_settings()
    runner = StressRunner(settings=settings, store=Store(settings.db_path),
                          deliver_in_background=False)
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()] if args.symbols else None
    if args.report is not None:
        _check_report_dir(args.report)  # before the run: a bad path runs nothing
    if args.all or (args.scenario and "," in args.scenario):
        return _run_many(args, runner, symbols)
    scenario = args.scenario or DEFAULT_SCENARIO
    result = runner.run_once(book=args.book, scenario=scenario, symbols=symbols,
                             trigger="cli")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    elif result.status != "failed":
        print(render_result(result.to_dict(), runner.scenario(scenario).to_dict(),
                            top=args.top, breaches_only=args.breaches_only))
    halt = runner.halt()
    if halt is not None:
        print(halted_line(halt), file=sys.stderr if args.json else sys.stdout)
    report_error = _write_reports(runner.store, [result], args.report)
    sys.stdout.flush()  # the result is out before any alert is waited for
    deliver_alerts(runner, settings.stress_alert_wait_s)
    if result.status == "failed":
        print(f"stress-runner: error: stress run {result.run_id} failed: {result.error}",
              file=sys.stderr)
        return EXIT_INPUT
    if report_error:
        print(f"stress-runner: error: {report_error}", file=sys.stderr)
    if result.breach_count:
        return EXIT_BREACH
    return EXIT_INPUT if report_error else EXIT_OK


def deliver_alerts(runner: Any, wait_s: float) -> None:
    """Send the pending alerts, waiting at most ``wait_s``; what is left stays in the outbox
    for the service or ``stress-runner alerts flush`` (no join on a hung sink at exit)."""
    def note(pending: list[Any]) -> None:
        sinks = ", ".join(sorted({row.sink for row in pending}))
        print(f"stress-runner: waiting up to {wait_s:g} s for {len(pending)} alert "
              f"deliver{'y' if len(pending) == 1 else 'ies'} ({sinks}) ...", file=sys.stderr)

    left = runner.deliveries.drain(wait_s, on_wait=note)
    if left:
        errors = "; ".join(f"{row.sink}: {row.last_error or 'not sent yet'}" for row in left[:3])
        print(f"stress-runner: {len(left)} alert deliver{'y' if len(left) == 1 else 'ies'} "
              f"still pending ({errors}); stress-runner serve or stress-runner alerts flush "
              "sends them", file=sys.stderr)


def halted_line(halt: dict[str, Any]) -> str:
    return (f"Trading is HALTED since {halt['since']} by run {halt['run_id']} "
            f"({halt['scenario']}); clear it with stress-runner reset")


def _status(args: argparse.Namespace) -> int:
    """What an operator asks first: is trading halted, did the last run pass, what is next."""
    from datetime import UTC, datetime

    from stress_plugin.core.errors import RunFailure
    from stress_plugin.core.times import iso_utc
    from stress_plugin.runner import StressRunner
    from stress_plugin.service.config import effective_config
    from stress_plugin.settings import load_settings
    from stress_plugin.store import Store

    settings = load_settings()
    store = Store(settings.db_path)
    runner = StressRunner(settings=settings, store=store)
    config = effective_config(settings, store.current_config())
    scenario = runner.scenario(config["scenarios"][0])
    try:
        limits, sources = runner.limits(scenario)
        in_force: dict[str, Any] = {name: {"value": value, "source": sources[name]}
                                    for name, value in limits.to_dict().items()}
    except RunFailure as exc:
        in_force = {"error": str(exc)}
    next_run = None
    if config["enabled"]:
        next_run = iso_utc(_schedule_of(config).next_after(datetime.now(UTC)))
    halt, last = runner.halt(), store.last_run_summary()
    if args.json:
        print(json.dumps({"halted": halt is not None, "halt": halt, "last_run": last,
                          "next_run": next_run, "scenario": scenario.name, "limits": in_force},
                         indent=2))
        return EXIT_OK
    print(halted_line(halt) if halt else "Trading is not halted.")
    if halt:
        print(f"  reason: {halt['reason']}")
        print(f"  symbols: {', '.join(halt['symbols']) or '-'}")
    print("Last run: " + ("none" if last is None else
                          f"{last['run_id']} at {last['timestamp']} ({last['scenario']}, "
                          f"{last['status']}, {last['trigger']})"))
    print(f"Next run: {next_run or 'none scheduled (disabled)'}")
    print(f"Limits in force for {scenario.name}:")
    if "error" in in_force:
        print(f"  cannot be read: {in_force['error']}")
    else:
        rows = [(name, f"{v['value']:g}", v["source"]) for name, v in in_force.items()]
        print(_table(("LIMIT", "VALUE", "SOURCE"), rows))
    return EXIT_OK


def _reset(args: argparse.Namespace) -> int:
    """Clear the halt with the same rule as ``POST /api/v1/risk/reset_circuit``, audited with
    the OS user who ran it."""
    import getpass

    from stress_plugin.runner import StressRunner
    from stress_plugin.settings import load_settings
    from stress_plugin.store import Store

    settings = load_settings()
    runner = StressRunner(settings=settings, store=Store(settings.db_path))
    user = f"os:{getpass.getuser()}"
    outcome = runner.approve_reset(user, user, args.reason)
    cleared = outcome["cleared"]
    if cleared is not None:
        print(f"Halt of run {cleared['run_id']} ({cleared['scenario']}, since "
              f"{cleared['since']}) cleared; RESET published on the host bus.")
    elif outcome["approvals"]:
        names = ", ".join(a["operator"] for a in outcome["approvals"])
        print(f"Approval recorded ({len(outcome['approvals'])} of {outcome['required']}: "
              f"{names}); trading stays HALTED until another operator approves, by "
              f"{outcome['expires_at']}.")
    else:
        print("Trading was not halted; nothing to clear.")
    return EXIT_OK


def _token(args: argparse.Namespace) -> int:
    """A new random token on stdout, with the line (name, role, SHA-256 of the token) that
    goes into STRESS_API_TOKENS_FILE; the token itself is stored nowhere."""
    from stress_plugin.service.security import new_token

    token, line = new_token(args.name, args.role)
    print(f"token for {args.name} ({args.role}), shown once; give it to the operator:")
    print(token)
    print("add this line to the STRESS_API_TOKENS_FILE file:")
    print(line)
    return EXIT_OK


def _run_many(args: argparse.Namespace, runner: Any, symbols: list[str] | None) -> int:
    """``run --all`` or ``run --scenario a,b``: one book snapshot, one row per scenario;
    ``--report FILE.html`` writes one report per scenario, ``FILE-<scenario>.html``."""
    from stress_plugin.core.errors import NO_VALUE, ConfigError

    if args.all and args.scenario:
        raise ConfigError("arguments", "--all", args.scenario,
                          "cannot be combined with --scenario")
    for flag, given in (("--top", args.top is not None), ("--breaches-only", args.breaches_only)):
        if given:  # they cut one run's symbol table; several scenarios print one row each
            raise ConfigError("arguments", flag, NO_VALUE,
                              "applies to one scenario's symbol table, not to --all or "
                              "--scenario a,b (one row per scenario); see the JSON or each "
                              "run's --report")
    if args.all:
        names: list[str] = sorted(runner.scenarios())
    else:
        names = [n.strip() for n in args.scenario.split(",") if n.strip()]
    results = runner.run_many(book=args.book, scenarios=names, symbols=symbols, trigger="cli")
    data = [r.to_dict() for r in results]
    print(json.dumps(data, indent=2, allow_nan=False) if args.json else render_many(data))
    halt = runner.halt()
    if halt is not None:
        print(halted_line(halt), file=sys.stderr if args.json else sys.stdout)
    report_error = _write_reports(runner.store, results, args.report)
    sys.stdout.flush()  # every row is out before any alert is waited for
    deliver_alerts(runner, runner.settings.stress_alert_wait_s)  # once, for every run
    for result in results:
        if result.status == "failed":
            print(f"stress-runner: error: stress run {result.run_id} ({result.scenario}) "
                  f"failed: {result.error}", file=sys.stderr)
    if report_error:
        print(f"stress-runner: error: {report_error}", file=sys.stderr)
    # 1 whenever a KILL_SWITCH went out; else 2 if some scenario could not check the book
    if any(r.breach_count for r in results):
        return EXIT_BREACH
    failed = report_error or any(r.status == "failed" for r in results)
    return EXIT_INPUT if failed else EXIT_OK


def report_path(path: Path, scenario: str, several: bool) -> Path:
    """Where ``--report FILE.html`` writes a scenario's report: FILE.html itself for one run;
    ``FILE-<scenario>.html`` beside it for each run of ``--all`` or ``--scenario a,b``
    (scenario names are letters, digits, '_', '.' and '-': safe in a file name)."""
    if not several:
        return path
    return path.with_name(f"{path.stem}-{scenario}{path.suffix or '.html'}")


def _check_report_dir(path: Path) -> None:
    """``--report``'s directory must exist and be writable, checked before anything runs."""
    import os

    from stress_plugin.core.errors import ConfigError

    folder = path.parent
    if path.is_dir():
        raise ConfigError("arguments", "--report", str(path), "cannot write: Is a directory")
    if not folder.is_dir():
        raise ConfigError("arguments", "--report", str(path),
                          "cannot write: No such file or directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError("arguments", "--report", str(path), "cannot write: Permission denied")


def _write_reports(store: Any, results: Sequence[Any], path: Path | None) -> str | None:
    """Each stored run's HTML report (``report_path``); the report module is imported only
    here, so ``run`` alone stays as quick. Returns what could not be written, if anything:
    the runs are stored and their alerts still go out."""
    if path is None:
        return None
    from stress_plugin import report
    from stress_plugin.core.errors import ConfigError

    several = len(results) > 1
    for result in results:
        target = report_path(path, result.scenario, several)
        text = report.render_html(*report.stored_report(store, result.run_id))
        try:
            target.write_text(text, encoding="utf-8")
        except OSError as exc:
            return str(ConfigError("arguments", "--report", str(target),
                                   f"cannot write: {exc.strerror}"))
        logging.getLogger("stress_runner").info("report of run %s (%s) written to %s",
                                                result.run_id, result.scenario, target)
    return None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1 (got {text!r})")
    return value


def _validate(args: argparse.Namespace) -> int:
    from stress_plugin.core.validate import MAX_SHOWN, validate_file
    from stress_plugin.settings import load_settings

    checked = validate_file(args.path, load_settings().stress_max_file_bytes)
    if not checked.problems:
        print(f"OK: {checked.summary}")
        return EXIT_OK
    count = len(checked.problems)
    print(f"stress-runner: {args.path}: {count} problem{'s' if count > 1 else ''}",
          file=sys.stderr)
    for problem in checked.problems[:MAX_SHOWN]:
        print(f"stress-runner: error: {problem}", file=sys.stderr)
    if count > MAX_SHOWN:
        print(f"stress-runner: ... and {count - MAX_SHOWN} more", file=sys.stderr)
    return EXIT_INPUT


def _scenarios(args: argparse.Namespace) -> int:
    from stress_plugin.runner import StressRunner

    found = StressRunner().scenarios()
    if args.json:
        print(json.dumps({n: {**s.to_dict(), "origin": s.origin} for n, s in found.items()},
                         indent=2))
        return EXIT_OK
    rows = [(name, s.event_date or "-", _moves(s.to_dict()), _shape(s.to_dict()),
             _shorten(s.source) or s.origin) for name, s in sorted(found.items())]
    print(_table(("SCENARIO", "EVENT DATE", "MOVES", "SHAPE", "SOURCE (or file)"), rows))
    return EXIT_OK


def _plugins(args: argparse.Namespace) -> int:
    """What the service would run with: the entry points and the service's own plugins."""
    from stress_plugin.service.service import StressService
    from stress_plugin.settings import load_settings

    plugins = StressService(load_settings()).plugins
    plugins.require_evaluator()
    infos = plugins.describe()
    if args.json:
        print(json.dumps({"plugins": [i.to_dict() for i in infos],
                          "blocked": plugins.blocked(),
                          "book_suppliers": plugins.book_suppliers()}, indent=2))
        return EXIT_OK
    rows = [(i.name, i.distribution, i.version, ", ".join(i.hooks)) for i in infos]
    print(_table(("NAME", "DISTRIBUTION", "VERSION", "HOOKS"), rows))
    suppliers = plugins.book_suppliers()
    print(f"book: supplied by {', '.join(suppliers) or 'no plugin (runs fail: no book)'}")
    if plugins.blocked():
        print(f"blocked by STRESS_DISABLE_PLUGINS: {', '.join(plugins.blocked())}")
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from stress_plugin.core.book import load_book
    from stress_plugin.service.api import create_app, serve
    from stress_plugin.service.service import StressService
    from stress_plugin.settings import load_settings

    settings = load_settings()
    if args.book is not None:
        # a bad book stops start-up, not the first scheduled run
        load_book(args.book, settings.stress_max_file_bytes)
    service = StressService(settings, book_path=args.book)
    serve(create_app(service, bound_host=args.host), args.host, args.port,
          settings.trusted_proxies)
    return EXIT_OK


def _schedule(args: argparse.Namespace) -> int:
    """The same slot arithmetic and the same effective config as the service's scheduler."""
    from datetime import UTC, datetime

    from stress_plugin.core.errors import ConfigError
    from stress_plugin.core.times import iso_utc
    from stress_plugin.service.config import effective_config
    from stress_plugin.settings import load_settings
    from stress_plugin.store import Store

    settings = load_settings()
    config = effective_config(settings, Store(settings.db_path).current_config())
    if args.count < 1:
        raise ConfigError("arguments", "--count", args.count, "must be >= 1")
    try:
        start = datetime.fromisoformat(args.start) if args.start else datetime.now(UTC)
    except ValueError:
        raise ConfigError("arguments", "--from", args.start, "must be ISO 8601") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    if not config["enabled"]:
        print("stress-runner: scheduling is disabled (STRESS_ENABLED=false or config)",
              file=sys.stderr)
        return EXIT_OK
    for moment in _schedule_of(config).after(start, args.count):
        print(iso_utc(moment))
    return EXIT_OK


def _schedule_of(config: dict[str, Any]) -> Schedule:
    """The service's ``Schedule`` from its effective config (pure: no scheduler is loaded)."""
    from stress_plugin.service.schedule import Schedule

    return Schedule(config["interval_minutes"], config["offset_seconds"],
                    config["market_hours_only"])


# -- rendering -------------------------------------------------------------------------------


def _describe(s: dict[str, Any]) -> str:
    shock = (f"{s['price_shock_pct']:+.1%} shock" if s["price_shock_pct"] or not
             s.get("symbol_shocks") else _moves(s))
    return f"{shock}, {_shape(s)}"


def _moves(s: dict[str, Any]) -> str:
    """What a scenario moves, grouped by shock: 'ES* MES* -5%; 6J* +3.3%' ('*' = the rest)."""
    groups: dict[float, list[str]] = {}
    for key, shock in (s.get("symbol_shocks") or {}).items():
        groups.setdefault(shock, []).append(key)
    if s["price_shock_pct"]:
        groups.setdefault(s["price_shock_pct"], []).append("*")
    return "; ".join(f"{' '.join(keys)} {_pct(shock)}" for shock, keys in groups.items()
                     if shock) or "nothing"


def _shape(s: dict[str, Any]) -> str:
    spreads = f"spreads {s['spread_mult']:g}x" + "".join(
        f", {k} {v:g}x" for k, v in (s.get("spread_mults") or {}).items())
    fall = (f"{s['ramp_sec']:g} s to the trough, " if s.get("ramp_sec") else "") + (
        f"{s['hold_sec']:g} s held, " if s.get("hold_sec") else "")
    return f"{spreads}, {fall}{s['duration_sec']:g} s, {s['recovery_type']} recovery"


def _pct(value: float) -> str:
    return f"{value * 100:+.2f}".rstrip("0").rstrip(".") + "%"


def _shorten(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def render_many(results: list[dict[str, Any]]) -> str:
    """One row per scenario of a ``run_many`` (the same book snapshot for every row)."""
    from stress_plugin.runner import summary

    rows = []
    for row in map(summary, results):
        if row["worst_pnl"] is None:  # a failed run: no figures (its error goes to stderr)
            rows.append((row["scenario"], "FAILED", "-", "-", "-", "-", "-"))
            continue
        breached = ", ".join(row["breached_symbols"][:3]) + (
            " ..." if len(row["breached_symbols"]) > 3 else "")
        rows.append((row["scenario"], row["status"].upper(), f"{row['worst_pnl']:,.2f}",
                     f"{row['drawdown_pct']:.3%}",
                     f"{row['breach_count']} ({breached})" if row["breach_count"] else "0",
                     _headroom(row["headroom"]), row["binding_symbol"] or "-"))
    breaching = [r["scenario"] for r in results if r["breach_count"]]
    failed = [r["scenario"] for r in results if r["status"] == "failed"]
    first = results[0]
    lines = [f"{len(results)} scenarios on one book snapshot ({first['symbols_tested']} "
             f"symbols), {first['timestamp']}", "",
             _table(("SCENARIO", "STATUS", "WORST P&L", "DRAWDOWN", "BREACHES", "HEADROOM",
                     "BINDING"), rows, right=range(2, 6)), ""]
    if breaching:
        lines.append(f"BREACH in {', '.join(breaching)}: KILL_SWITCH triggered once")
    lines += _confirmation(next((r for r in results if r["kill_switch"]), None))
    if failed:
        lines.append(f"FAILED: {', '.join(failed)} could not be checked (see the errors)")
    checked = [r for r in results if r["headroom"] is not None]
    if not breaching and checked:
        low = min(checked, key=lambda r: r["headroom"])
        lines.append(f"No breach. Lowest headroom {_headroom(low['headroom'])} "
                     f"({low['scenario']}).")
    return "\n".join(lines)


def render_result(result: dict[str, Any], scenario: dict[str, Any], *, top: int | None = None,
                  breaches_only: bool = False) -> str:
    """The human-readable table of one run; a ``!`` marks a breached figure. ``top`` keeps
    the largest losses (largest first), ``breaches_only`` the breached symbols."""
    limits = result["limits"]
    breached = {(b["symbol"], b["limit"]) for b in result["breaches"]}

    def mark(symbol: str, limit: str, text: str) -> str:
        return text + (" !" if (symbol, limit) in breached else "  ")

    def row(symbol: str, m: dict[str, Any]) -> tuple[str, ...]:
        var = "-" if m["var_ratio"] is None else f"{m['var_ratio']:.3f}x"
        delta = "-" if m["delta_change"] is None else f"{m['delta_change']:.4f}"
        return (
            symbol,
            f"{m['worst_pnl']:,.2f}",
            mark(symbol, "max_drawdown_pct", f"{m['drawdown_pct']:.3%}"),
            mark(symbol, "max_var_multiplier", var),
            mark(symbol, "max_position_delta", delta),
            _headroom(m["headroom"]),
        )

    shown = list(result["symbols"].items())
    if breaches_only:
        shown = [(sym, m) for sym, m in shown if sym in result["breached_symbols"]]
    if top is not None:
        shown = sorted(shown, key=lambda item: item[1]["worst_pnl"])[:top]
    rows = [row(sym, m) for sym, m in shown]
    rows.append(row("PORTFOLIO", result["portfolio"]))
    sources = result.get("limit_sources") or {}

    def src(limit: str) -> str:
        return f" ({sources[limit]})" if limit in sources else ""

    lines = [
        f"Scenario {result['scenario']}: {_describe(scenario)}",
        f"Book: {result['book_source']}",
        f"Run {result['run_id']} at {result['timestamp']}: {result['symbols_tested']} symbols "
        f"tested in {result['runtime_ms']:.2f} ms",
        "",
        _table(("SYMBOL", "WORST P&L", "DRAWDOWN", "VAR RATIO", "DELTA CHG", "HEADROOM"), rows,
               right=range(1, 6)),
        "",
        f"Limits: drawdown {limits['max_drawdown_pct']:.2%}{src('max_drawdown_pct')}, "
        f"VaR {limits['max_var_multiplier']:g}x{src('max_var_multiplier')}, "
        f"delta change {limits['max_position_delta']:g}{src('max_position_delta')}"
        "   (! = breached)",
    ]
    if len(shown) < len(result["symbols"]):
        which = "breached" if breaches_only else "tested"
        lines.append(f"Shown: {len(shown)} of {len(result['symbols'])} symbols "
                     f"({'the largest losses among the ' if top else ''}{which} ones)")
    if result["skipped_symbols"]:
        lines.append(f"Skipped (STRESS_MAX_SYMBOLS): {len(result['skipped_symbols'])} symbols")
    if result["breach_count"]:
        lines.append(f"BREACH on {', '.join(result['breached_symbols'])}: KILL_SWITCH triggered; "
                     f"headroom {result['headroom']:.4f}")
    elif result["headroom"] > 1:
        lines.append(f"No breach. Headroom {_headroom(result['headroom'])}: a crash "
                     f"{result['headroom']:.2f} times as deep would breach the first limit.")
    else:  # long gamma: a shallower crash breaches, this one's path skips the losing band
        lines.append(f"No breach at this depth, but headroom {_headroom(result['headroom'])}: "
                     f"a crash {result['headroom']:.2f} times as deep breaches a limit.")
    lines += _confirmation(result if result["kill_switch"] else None)
    return "\n".join(lines)


def _headroom(value: float) -> str:
    return ">= 100" if value >= 100 else f"{value:.4f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
           ) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: Sequence[str]) -> str:
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


if __name__ == "__main__":
    sys.exit(main())


def _confirmation(result: dict[str, Any] | None) -> list[str]:
    """What the host's trading state said after the KILL_SWITCH, as one line (none without)."""
    if result is None:
        return []
    confirmed = result.get("kill_switch_confirmed")
    if confirmed is True:
        return ["KILL_SWITCH confirmed: the host's trading state shows the halt"]
    if confirmed is False:
        return ["KILL_SWITCH UNCONFIRMED: the host's trading state did not show the halt "
                "(STRESS_KILL_CONFIRM_S); paged separately. Check the trading system now."]
    return ["KILL_SWITCH not confirmed: no plugin answers stress_trading_state"]
