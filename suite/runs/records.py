"""Run folders: ``records.jsonl`` (one JSON object per point, appended and flushed as each point
ends) and ``env.json`` (where and how the run was made). Records are plain data, written and read
through their schema (schema.py): every chart and table is rebuilt from them alone.

A folder is safe to stop at any moment: an append starts on a fresh line (a line cut short by a
crash stays one corrupt line, skipped with a warning, and never swallows the next record);
``env.json`` is replaced atomically; and :class:`RunLock` lets one writer in at a time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import platform
import shlex
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.env import device_name, package_version
from ..core.errors import UserError, one_line
from . import schema

RECORDS = "records.jsonl"
ENV = "env.json"
# Statuses after which a point is not measured again when its run is resumed.
FINAL = ("ok", "oom", "error", "timeout", "unsupported", "unavailable", "diverged")


LOCK = ".lock"
# Set by a command for the processes it starts, which write into the run folder it holds.
LOCK_ENV = "ATTNBENCH_RUN_LOCK"


def append_record(run_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Validate one record, append it on a line of its own, and make sure it is on disk; returns it."""
    record = schema.dump(record)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / RECORDS, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # runs trained in parallel append to one file
        # A line cut short by a crash must not swallow this record: start on a fresh line.
        needs_newline = False
        end = f.seek(0, os.SEEK_END)
        if end > 0:
            f.seek(-1, os.SEEK_END)
            needs_newline = f.read(1) != b"\n"
        try:
            f.write((b"\n" if needs_newline else b"") + json.dumps(record, sort_keys=True).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        except OSError as err:  # a full disk: the records already there stay whole
            with contextlib.suppress(OSError):
                f.truncate(end)
            raise UserError(f"{run_dir / RECORDS}: cannot append a record ({err.strerror or err})") from None
    return record


def repair_tail(run_dir: Path) -> None:
    """Before a writer appends: a last line cut short by a crash (no newline, not JSON) is moved to
    records.jsonl.partial, so the file holds only whole records; a whole last line gets its newline."""
    path = Path(run_dir) / RECORDS
    if not path.exists():
        return
    with open(path, "r+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # a parallel run's append in flight is not a crash's cut line
        data = f.read()
        if not data or data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        tail = data[start:]
        try:
            json.loads(tail)
        except ValueError:
            with open(path.with_name(RECORDS + ".partial"), "ab") as kept:
                kept.write(tail + b"\n")
            f.truncate(start)
            warnings.warn(f"{path}: a last line cut short by a crash was moved to {RECORDS}.partial", stacklevel=2)
            return
        f.write(b"\n")


# Lines already warned about: a command reads a run more than once, and says so once.
_WARNED: set[str] = set()


def warn_once(message: str) -> None:
    """A warning about a file's content, shown once per command however often the file is read."""
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=3)


def json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each JSON line of `path`; a line that is not JSON (cut short, or bytes that
    are not UTF-8) is skipped with a warning naming it. Nothing when the file is absent."""
    if not path.exists():
        return
    with open(path, "rb") as f:  # bytes: one bad byte must cost its line, not the file
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except ValueError as err:  # UnicodeDecodeError included
                warn_once(f"{path}:{lineno}: skipped corrupt record ({one_line(err)})")


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """All records of a run; a corrupt line is skipped with a warning naming it."""
    path = Path(run_dir) / RECORDS
    records = []
    for lineno, raw in json_lines(path):
        try:
            records.append(schema.load(raw))
        except schema.SchemaError as err:
            if "newer" in str(err):  # another attnbench's data: skipping it would lose it silently
                raise UserError(f"{path}:{lineno}: {err}") from None
            warn_once(f"{path}:{lineno}: skipped record that does not fit its schema ({err})")
    return records


def read_env(run_dir: Path) -> dict[str, Any]:
    """The run's env.json ({} when absent); one line when it is not a JSON object."""
    path = Path(run_dir) / ENV
    if not path.exists():
        return {}
    try:
        env = json.loads(path.read_bytes())
    except ValueError as err:
        raise UserError(f"{path}: not valid JSON ({one_line(err)})") from None
    if not isinstance(env, dict):
        raise UserError(f"{path}: not a JSON object but {type(env).__name__}")
    return env


def write_env(run_dir: Path, env: dict[str, Any]) -> None:
    """Replace env.json atomically: a reader (or a crash) sees the old file or the new, never half."""
    write_atomic(Path(run_dir) / ENV, json.dumps(env, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` to write, renamed onto `path` when the block ends (removed if it
    raises): a reader, or a crash, sees the old file or the new one, never half of one. It gets the mode a
    plain open would give (0666 less the umask), not mkstemp's owner-only 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as err:  # a full disk: the file keeps its old content
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write ({err.strerror or err})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    with replaced_atomically(path) as tmp, open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock: a second writer is refused with one line naming the holder.

    The lock is the kernel's (flock), so it is released when its holder exits, however it exits.
    Processes a holder starts to write into the same folder inherit it through LOCK_ENV.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir} is a file, not a run folder: choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    if os.environ.get(LOCK_ENV) == str(run_dir.resolve()):
        yield
        return
    path = run_dir / LOCK
    f = open(path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise UserError(f"{run_dir} is being written by {holder}; wait for it or choose another --out") from None
        f.seek(0)
        f.truncate()
        started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        f.write(f"pid {os.getpid()} on {platform.node()} since {started}: {shlex.join(['attnbench', *sys.argv[1:]])}")
        f.flush()
        previous = os.environ.get(LOCK_ENV)
        os.environ[LOCK_ENV] = str(run_dir.resolve())
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(LOCK_ENV, None)
            else:
                os.environ[LOCK_ENV] = previous
            f.seek(0)
            f.truncate()
    finally:
        f.close()


def require_run(run_dir: Path) -> Path:
    """`run_dir` if it holds records, else a one-line error."""
    run_dir = Path(run_dir)
    if not (run_dir / RECORDS).exists():
        raise UserError(f"{run_dir}: no {RECORDS} here (not a run folder)")
    return run_dir


def _identity(device: str) -> dict[str, Any]:
    """The fields that make two runs' numbers comparable: the same machine and the same torch."""
    return {
        "device": "cuda" if device == "cuda" else "cpu",
        "device_name": device_name(device),
        "hostname": platform.node(),
        "cpu_count": os.cpu_count(),
        "torch": package_version("torch"),
    }


def read_checked_env(run_dir: Path, device: str, executor: str = "local") -> dict[str, Any]:
    """The run's env.json ({} when new); a one-line error when it records another machine or torch, or
    when a local run would add to a folder that a cluster run filled from other hosts."""
    recorded = read_env(run_dir)
    if not recorded:
        return recorded
    if executor == "local":
        here = platform.node()
        others = sorted({str(r["host"]) for r in read_records(run_dir) if r.get("host") not in (None, here)})
        if others:
            raise UserError(
                f"{run_dir} holds points measured on other hosts ({', '.join(others[:3])}): only a cluster run "
                "(--executor ray|slurm) mixes hosts in one folder; choose another --out"
            )
    here = _identity(device)
    there = {field: recorded.get(field) for field in here} | {"torch": recorded.get("versions", {}).get("torch")}
    differences = [
        f"{field} {there[field]!r} here {here[field]!r}"
        for field in here
        if there[field] is not None and there[field] != here[field]
    ]
    if differences:
        raise UserError(f"{run_dir} holds runs from another machine ({', '.join(differences)}): choose another --out")
    return recorded
