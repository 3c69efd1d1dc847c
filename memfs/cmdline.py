"""What `memfs` and `manage_data.py` share: options that say which store and how to reach it, the
decorator that hands a command its operations (in the spirit of borg's `with_repository`), errors
turned into exit codes (DESIGN.md §6), progress bars and JSON output.

Configuration is resolved here and only here: option > MEMFS_* environment variable > default.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import logging.handlers
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from .errors import EXIT_FAILED, EXIT_PROBLEMS, MemfsError
from .filestore import Layout, apply_store_umask

DEFAULT_ROOT = "./memory-system"
log = logging.getLogger("memfs.cli")


class CommandError(click.ClickException):
    """A MemfsError on its way out: message to stderr, the error's own exit code (DESIGN.md §6)."""

    def __init__(self, error: MemfsError):
        super().__init__(str(error))
        self.exit_code = error.exit_code


def printable(text: str, *, multiline: bool = False) -> str:
    """Text from a file name or a memory, safe for a terminal: control characters (an ESC sequence, a
    bell, a carriage return) shown escaped; with `multiline`, newlines and tabs kept as they are."""
    if text.isprintable():
        return text
    keep = "\n\t" if multiline else ""
    return "".join(c if c.isprintable() or c == " " or c in keep else repr(c)[1:-1] for c in text)


def emit_json(data) -> None:
    import orjson

    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def store_options(fn):
    """--root, how to reach the owner (--url / MEMFS_URL, --token / MEMFS_API_TOKEN), --no-daemon."""
    fn = click.option("--no-daemon", is_flag=True, default=False,
                      help="Open the store in this process instead of through an owner (env MEMFS_DAEMON=0). "
                           "For cron lines and scripts that want no background process.")(fn)
    fn = click.option("--token", envvar="MEMFS_API_TOKEN", default=None, show_default=False,
                      help="Bearer token for an owner reached over TCP (env MEMFS_API_TOKEN).")(fn)
    fn = click.option("--url", envvar="MEMFS_URL", default=None,
                      help="Use the memfs server at this URL (env MEMFS_URL). Without it, the store's owner "
                           "is found through its lock file and reached over its Unix socket.")(fn)
    return click.option("--root", envvar="MEMFS_ROOT", default=DEFAULT_ROOT, show_default=True,
                        type=click.Path(file_okay=False, path_type=Path),
                        help="The store's root directory (env MEMFS_ROOT).")(fn)


@dataclass(frozen=True)
class Settings:
    """A command's configuration, resolved once at the entry point (option > MEMFS_* variable > default)
    and handed down as `ctx.obj` (#19: it travelled as a dict, and commands could ignore part of it)."""

    root: Path
    layout: Layout
    url: str | None  # an owner reached over TCP; None: found through the store's lock file
    token: str | None
    daemon: bool  # False: --no-daemon / MEMFS_DAEMON=0, the command owns the store itself
    idle_exit: float | None
    lock_wait: float | None

    def local_only(self, command: str) -> Layout:
        """The store's layout, for a command that works on this machine's files or runs its owner: it
        cannot go through --url, and says so rather than ignore it."""
        if self.url is not None:
            raise click.UsageError(f"`{command}` works on the store on this machine (--root {self.root}); it "
                                   f"cannot use --url {self.url}. Run it where the store is, or drop --url / MEMFS_URL")
        return self.layout


def settings(root: Path, url: str | None, token: str | None, no_daemon: bool) -> Settings:
    """The resolved configuration a group puts in ctx.obj for its commands."""
    daemon = not no_daemon and os.environ.get("MEMFS_DAEMON", "1").strip().lower() not in ("0", "false", "no", "off")
    return Settings(root, Layout(root), url, token, daemon, _seconds("MEMFS_IDLE_EXIT", None),
                    _seconds("MEMFS_LOCK_WAIT", 60.0))


def problems_found() -> None:
    """The running command ends with exit code 1 (done, but problems were found) once its output is out."""
    click.get_current_context().meta["memfs.exit_code"] = EXIT_PROBLEMS


def _seconds(name: str, default: float | None) -> float | None:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{name} must be a number of seconds, not {value!r}") from None


def command(outcome_log: str | None = None):
    """Run a command: MemfsError -> its exit code; anything unexpected -> its traceback in
    data/logs/memfs.log, one clear line and exit 3. With `outcome_log`, one line per run in that file
    of data/logs/ says truthfully how the run ended (manage_data.py's audit trail)."""

    def decorate(fn):
        @functools.wraps(fn)
        @click.pass_context
        def wrapper(ctx: click.Context, *args, **kwargs):
            started = time.monotonic()
            outcome, code = "ok", 0
            try:
                apply_store_umask()  # every file a command or its owner creates is private (#24, 4)
                summary = ctx.invoke(fn, *args, **kwargs)
                code = ctx.meta.get("memfs.exit_code", 0)
                outcome = (f"problems (exit {code}) " if code else "ok ") + (summary or "")
            except MemfsError as e:
                outcome, code = f"failed (exit {e.exit_code}): {e}", e.exit_code
                raise CommandError(e) from e
            except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt) as e:
                outcome = f"stopped ({type(e).__name__})"
                raise
            except BrokenPipeError:
                # `memfs list | head`: the reader stopped reading; nothing failed, so no traceback
                # (issue #24, item 5). stdout goes to /dev/null so the exit's flush cannot fail again.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
                outcome = "stopped (the reader closed the pipe)"
            except Exception as e:
                error_id = secrets.token_hex(4)
                _log_traceback(ctx.obj.layout, error_id, e)
                outcome, code = f"failed (exit {EXIT_FAILED}): unexpected {type(e).__name__} (error id {error_id})", EXIT_FAILED
                raise CommandError(MemfsError(
                    f"unexpected error ({type(e).__name__}: {printable(str(e))[:200]}); the traceback is in "
                    f"data/logs/memfs.log under error id {error_id}")) from e
            finally:
                if outcome_log:
                    _append_line(ctx.obj.layout, outcome_log,
                                 f"{ctx.info_name} {outcome.strip()} ({time.monotonic() - started:.2f}s)")
            if code:
                ctx.exit(code)
        return wrapper
    return decorate


def _log_traceback(layout: Layout, error_id: str, e: Exception) -> None:
    logs = layout.logs
    if not logs.is_dir():
        import traceback

        traceback.print_exception(e, file=sys.stderr)
        return
    with log_to_file(logs / "memfs.log", log, "%(asctime)s %(levelname)s %(name)s: %(message)s", 5 << 20, 3):
        log.error("unexpected error %s", error_id, exc_info=e)


def _append_line(layout: Layout, name: str, line: str) -> None:
    logs = layout.logs
    if not logs.is_dir():
        return  # no store there: nothing to log into, and the error already said so
    audit = logging.getLogger(f"memfs.audit.{name}")
    audit.propagate = False
    with log_to_file(logs / name, audit, "%(asctime)s %(message)s", 1 << 20, 5):
        audit.info(line)


@contextlib.contextmanager
def log_to_file(path: Path, logger: logging.Logger, fmt: str, max_bytes: int, keep: int):
    """Send `logger`'s records to a rotated file for a while; a full disk only warns."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=keep)
    except OSError as e:
        click.echo(f"warning: could not write {path}: {e.strerror}", err=True)
        yield
        return
    handler.setFormatter(logging.Formatter(fmt))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        try:
            handler.close()
        except OSError as e:  # a full disk must not hide the command's own outcome
            click.echo(f"warning: could not write {path}: {e.strerror}", err=True)


def with_operations(*, needs_model=False, create: bool = False, level: bool = True, open_store: bool = True):
    """Hand the command `ops` (memfs.ops.Operations) for its store, closed when it returns.

    `needs_model`: True, or a function of the command's keyword arguments, for commands that embed;
    they start an owner on demand when none runs (unless --no-daemon), so the next one finds the model
    loaded. Other commands use a running owner, or own the store for their own run, picking up hand
    edits first unless `level` is False (validate, which reports them).
    """

    def decorate(fn):
        @functools.wraps(fn)
        @click.pass_context
        def wrapper(ctx: click.Context, *args, **kwargs):
            from .connect import DEFAULT_IDLE_EXIT, connect

            o = ctx.obj
            model = needs_model(kwargs) if callable(needs_model) else needs_model
            with contextlib.ExitStack() as stack:
                def local(ops) -> None:  # this process owns the store: log where the owner would
                    stack.enter_context(log_to_file(ops.layout.logs / "memfs.log", logging.getLogger("memfs"),
                                                    "%(asctime)s %(levelname)s %(name)s: %(message)s", 5 << 20, 3))

                ops = connect(o.layout, url=o.url, token=o.token, daemon=o.daemon, needs_model=model,
                              idle_exit=o.idle_exit or DEFAULT_IDLE_EXIT, wait=o.lock_wait, create=create,
                              level=level, open_store=open_store, on_local=local)
                stack.callback(ops.close)
                return ctx.invoke(fn, ops, *args, **kwargs)
        return wrapper
    return decorate


@contextlib.contextmanager
def progress_bar(enabled: bool):
    """A rich progress bar on stderr when it is a terminal; otherwise a callback that does nothing."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield update


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
