"""Atomic result files: a reader never sees a half-written JSON, CSV or checkpoint.

With several processes (``jax.distributed``), only process 0 writes results and
checkpoints, takes the lock and repairs files (``_writer``); the others compute the same
steps and write nothing."""
from __future__ import annotations

import csv
import gzip
import io
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Iterable


def _file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the process's umask (0644
    under the usual umask 022). The umask can only be read by setting it, so it is set
    and restored at once."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``.
    ``tempfile.mkstemp`` creates the temporary file readable by its owner only (0600);
    it gets the mode of an ordinarily created file before the rename, so result files
    are as readable as the figures beside them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), _file_mode())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _writer() -> bool:
    """Process 0 alone writes (jax.process_index() == 0); always True on one host."""
    from stochbp.experiments.parallel import is_writer
    return is_writer()


def write_json(path: Path, obj: Any) -> None:
    if not _writer():
        return
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_csv(path: Path, rows: Iterable[dict]) -> None:
    if not _writer():
        return
    rows = list(rows)
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: v for k, v in row.items() if not isinstance(v, (list, dict))})
    atomic_write_bytes(path, buf.getvalue().encode())


RUN_KEYS = ("run_id", "config", "experiment", "settings", "steps", "evals")


class DamagedFile(Exception):
    """A result or checkpoint file that cannot be used; the message names the file."""


def check_run(json_path: Path) -> dict:
    """The run stored in ``runs/<id>.json``, after checking it and its CSV: the JSON
    parses, has every key with the right type and its own run_id, and the CSV beside
    it exists with a header and one row per step and evaluation. A compressed
    ``runs/<id>.json.gz`` (how docs/reproduction keeps its runs) is checked the same way
    without a CSV, which only repeats the JSON's rows. Raises DamagedFile naming the
    file and what is wrong."""
    json_path = Path(json_path)
    compressed = json_path.name.endswith(".json.gz")
    try:
        text = (gzip.decompress(json_path.read_bytes()).decode() if compressed
                else json_path.read_text())
        run = json.loads(text)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedFile(f"{json_path}: not a readable JSON file ({err})") from None
    if not isinstance(run, dict):
        raise DamagedFile(f"{json_path}: expected a JSON object, got {type(run).__name__}")
    missing = [k for k in RUN_KEYS if k not in run]
    if missing:
        raise DamagedFile(f"{json_path}: missing keys {missing}")
    stem = json_path.name[:-len(".json.gz")] if compressed else json_path.stem
    if run["run_id"] != stem:
        raise DamagedFile(f"{json_path}: holds run {run['run_id']!r}, not {stem!r}")
    if not isinstance(run["config"], dict) or not isinstance(run["steps"], list) or \
            not isinstance(run["evals"], list) or not run["evals"]:
        raise DamagedFile(f"{json_path}: config must be an object and steps/evals "
                          "non-empty lists")
    if compressed:
        return run
    csv_path = json_path.with_suffix(".csv")
    try:
        rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DamagedFile(f"{csv_path}: missing or unreadable ({err})") from None
    expected = len(run["steps"]) + len(run["evals"])
    if len(rows) != expected or any(None in r or None in r.values() for r in rows):
        raise DamagedFile(f"{csv_path}: {len(rows)} complete rows, expected {expected} "
                          "(truncated?)")
    return run


def read_checkpoint(path: Path) -> dict:
    """A checkpoint written by :func:`write_pickle`; DamagedFile if it cannot be read."""
    try:
        ckpt = read_pickle(path)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means damaged
        raise DamagedFile(f"{path}: damaged checkpoint ({type(err).__name__}: {err})") \
            from None
    if not isinstance(ckpt, dict) or not {"state", "steps", "evals"} <= set(ckpt):
        raise DamagedFile(f"{path}: not a stochbp checkpoint")
    return ckpt


def set_aside(path: Path) -> Path:
    """Rename a damaged file to <name>.damaged[-N] (never overwriting) and return it."""
    path = Path(path)
    target = path.with_name(path.name + ".damaged")
    if not _writer():
        return target
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{n}")
    os.replace(path, target)
    return target


def sweep_temporaries(root: Path) -> list:
    """Remove the ``.*.tmp`` files that a kill during an atomic write leaves behind."""
    removed = []
    if not _writer():
        return removed
    for tmp in Path(root).rglob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink()
            removed.append(tmp)
    return removed


class Lock:
    """An exclusive lock file ``<out>/.lock`` holding the owner's pid. A lock whose
    process no longer exists is stale and taken over."""

    def __init__(self, out: Path):
        self.path = Path(out) / ".lock"
        self.held = False

    def acquire(self) -> None:
        from stochbp.experiments.errors import UsageError
        if not _writer():
            return
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pid = self._owner()
                if pid is not None and _alive(pid):
                    raise UsageError(f"{self.path.parent} is in use by another stochbp "
                                     f"process (pid {pid}, lock file {self.path}); wait "
                                     "for it to finish, or stop it first") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            self.held = True
            return
        raise UsageError(f"could not take the lock file {self.path}")

    def _owner(self):
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_pickle(path: Path, obj: Any) -> None:
    if not _writer():
        return
    atomic_write_bytes(path, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def read_pickle(path: Path) -> Any:
    with open(path, "rb") as fh:
        return pickle.load(fh)
