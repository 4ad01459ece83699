"""The run store: a run directory whose every write survives a crash.

Layout (see the architecture page):
    manifest.json                    config, config hash, code version, packages, platform, command line, start time
    sessions.jsonl                   one line per invocation (worker, chunk, command line, config hash)
    stages/<stage>/journal*.jsonl    one JSON line per finished unit; appended, flushed and fsynced
    artifacts/<stage>/<unit>/        written under a temporary name, renamed into place
    work/<stage>/<unit>/             a unit's scratch (trainer checkpoints): kept across crashes and `error`
                                     records so a retry resumes from it, removed once the unit is recorded
    claims/<stage>/<unit>.lock       held by the worker processing a unit (see runners/chunks.py)
    logs/                            one log file per worker

A unit counts as done once its journal line is on disk. Journals of chunks run elsewhere (`journal-*.jsonl`
copied into the stage folder) merge by unit id: a recorded `ok`/`invalid` never reverts to an `error` line (from
any file, in any order); between two recorded lines the later one by its `t` wins; otherwise the last line read.

The run directory itself is created by the first write (the manifest), so a command refused during validation
leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from runners.sync import RunSync

log = logging.getLogger(__name__)

Status = Literal["ok", "invalid", "error"]
DONE_STATUSES = ("ok", "invalid")  # `error` units (infrastructure failures) are retried on the next run


class RunStoreError(RuntimeError):
    """A run directory that cannot be used as asked (config changed, unreadable manifest …)."""


@dataclass(frozen=True)
class UnitRecord:
    unit: str
    status: Status
    reason: str | None
    result: Any
    seconds: float
    worker: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> path relative to the run root
    config_hash: str | None = None  # the config identity the unit was produced under
    t: float = 0.0  # when the line was written (seconds since the epoch); 0 for lines without one


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary sibling, fsync, rename: readers see the old file or the whole new one."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


# Lines this store writes start with the unit id and status and end with this marker. A line torn by a crash
# cannot end with the marker, so a resume scan can trust a line from its two ends without parsing the middle.
_LINE_HEAD = re.compile(rb'^\{"unit":("(?:[^"\\]|\\.)*"),"status":"(ok|invalid|error)",')
_LINE_END = b',"end":true}'
_LINE_T = re.compile(rb',"t":(-?[0-9.eE+-]+)[,}]')


# (journal, offset) of the torn lines this process terminated and warned about: a reader does not warn again.
_WARNED_TORN: set[tuple[Path, int]] = set()


class Journal:
    """Append-only JSONL record of a stage's finished units.

    Each record is one `write()` of one line on a file opened with O_APPEND, so concurrent workers on one machine
    never interleave inside a line. A crash mid-write can leave a torn last line: readers skip it with a warning,
    and the next writer first terminates it so that its own line stays intact. Results are parsed only when asked
    for (`records()`), so finding what is left in a large run reads little more than the unit ids.
    """

    def __init__(self, stage_dir: Path, name: str = "journal.jsonl") -> None:
        self.stage_dir = stage_dir
        self.path = stage_dir / name
        self._fd: int | None = None
        self._read_offsets: dict[Path, int] = {}
        self._status: dict[str, str] = {}
        self._raw: dict[str, bytes | UnitRecord] = {}

    def _merge(self, unit: str, status: str, raw: bytes | UnitRecord) -> None:
        """Take a line for `unit` unless it would undo a recorded result (see the module docstring)."""
        old = self._status.get(unit)
        if old in DONE_STATUSES:
            if status not in DONE_STATUSES:
                return  # an `error` never reverts a recorded unit, whichever file or order it came from
            if _line_time(self._raw[unit]) > _line_time(raw):
                return
        self._status[unit] = status
        self._raw[unit] = raw

    # -- writing ---------------------------------------------------------------------------------------------
    def _open(self) -> int:
        if self._fd is None:
            self.stage_dir.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._heal_torn_tail()
        return self._fd

    def _heal_torn_tail(self) -> None:
        size = os.fstat(self._fd).st_size  # type: ignore[arg-type]
        if size == 0:
            return
        with open(self.path, "rb") as fh:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                log.warning("%s: the last line was torn by a crash; it is ignored", self.path)
                _WARNED_TORN.add((self.path, size))
                os.write(self._fd, b"\n")  # type: ignore[arg-type]

    @staticmethod
    def encode(record: UnitRecord) -> bytes:
        """The journal line of a record: unit and status first, the end marker last (see _LINE_HEAD/_LINE_END)."""
        line = {
            "unit": record.unit,
            "status": record.status,
            "reason": record.reason,
            "seconds": round(record.seconds, 6),
            "worker": record.worker,
            "t": record.t,
            "config_hash": record.config_hash,
            "artifacts": record.artifacts,
            "result": record.result,
            **record.extra,
            "end": True,
        }
        return (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")

    def append(self, record: UnitRecord) -> None:
        if not record.t:
            record = replace(record, t=round(time.time(), 3))
        data = self.encode(record)
        fd = self._open()
        written = os.write(fd, data)
        if written != len(data):  # a short write on a full disk: fail loudly, the unit is not done
            raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes); is the disk full?")
        os.fsync(fd)
        self._merge(record.unit, record.status, record)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- reading ---------------------------------------------------------------------------------------------
    def refresh(self) -> dict[str, str]:
        """Read whatever was appended (by anyone) since the last call; return the status of every unit."""
        if self.stage_dir.is_dir():
            for path in sorted(self.stage_dir.glob("journal*.jsonl")):
                self._read_new(path)
        return self._status

    def _read_new(self, path: Path) -> None:
        offset = self._read_offsets.get(path, 0)
        with open(path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
        if not chunk:
            return
        end = chunk.rfind(b"\n") + 1  # an unterminated tail may still be being written: leave it for later
        line_end = offset - 1
        for raw in chunk[:end].split(b"\n")[:-1]:
            line_end += len(raw) + 1  # where this line's newline is
            head = _LINE_HEAD.match(raw)
            if head and raw.endswith(_LINE_END):
                unit_text = head.group(1)
                unit = unit_text[1:-1].decode() if b"\\" not in unit_text else json.loads(unit_text)
                self._merge(unit, head.group(2).decode(), raw)
                continue
            if not raw.strip():
                continue
            record = _parse_line(raw)  # written by something else (an older version, a hand-made journal)
            if record is None:
                if (path, line_end) not in _WARNED_TORN:  # the writer that terminated it has said so already
                    log.warning("%s: skipping an unreadable line (torn by a crash?): %.80r", path, raw)
                continue
            self._merge(record.unit, record.status, record)
        self._read_offsets[path] = offset + end

    def records(self) -> dict[str, UnitRecord]:
        """Every unit's latest record, results parsed."""
        self.refresh()
        out: dict[str, UnitRecord] = {}
        for unit, raw in self._raw.items():
            record = raw if isinstance(raw, UnitRecord) else _parse_line(raw)
            if record is not None:
                self._raw[unit] = record
                out[unit] = record
        return out

    def done_units(self) -> set[str]:
        return {u for u, status in self.refresh().items() if status in DONE_STATUSES}

    def is_done(self, unit: str) -> bool:
        return self.refresh().get(unit) in DONE_STATUSES


def _parse_line(raw: bytes) -> UnitRecord | None:
    try:
        line = json.loads(raw)
        return UnitRecord(
            unit=str(line["unit"]),
            status=line["status"],
            reason=line.get("reason"),
            result=line.get("result"),
            seconds=float(line.get("seconds", 0.0)),
            worker=line.get("worker", ""),
            artifacts=dict(line.get("artifacts") or {}),
            config_hash=line.get("config_hash"),
            t=float(line.get("t") or 0.0),
        )
    except (ValueError, KeyError, TypeError):
        return None


def _line_time(raw: bytes | UnitRecord) -> float:
    """A line's `t` without parsing its result (only needed when two recorded lines for one unit meet)."""
    if isinstance(raw, UnitRecord):
        return raw.t
    found = _LINE_T.search(raw)
    try:
        return float(found.group(1)) if found else 0.0
    except ValueError:
        return 0.0


def _publish_once(tmp: Path, final: Path) -> None:
    """Make `tmp` appear as `final` unless `final` exists (FileExistsError then). A hard link is atomic; mounts
    without hard links (Google Drive on Colab, some FUSE and SMB mounts) fall back to an exclusive create."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise
    except OSError:
        fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(tmp.read_bytes())
            fh.flush()
            os.fsync(fh.fileno())
    fsync_dir(final.parent)


def _config_changes(
    existing: dict[str, Any],
    config: dict[str, Any],
    config_hash: str,
    rule: Callable[[dict[str, Any]], list[str]] | None,
) -> list[str]:
    if existing.get("config_hash") == config_hash:
        return []
    stored = existing.get("config", {})
    if rule is not None:
        return rule(stored)
    from runners.config import diff_configs

    return diff_configs(stored, config) or ["(no key differs: the schema itself changed)"]


def _data_changes(old: dict[str, str] | None, new: dict[str, str] | None) -> list[str]:
    """Data names whose content hash differs (a run recorded without an identity is not checked)."""
    if old is None or new is None:
        return []
    lines = []
    for name in sorted(set(old) | set(new)):
        if name not in new:
            lines.append(f"data {name}: no longer read")
        elif name not in old:
            lines.append(f"data {name}: new")
        elif old[name] != new[name]:
            lines.append(f"data {name}: content changed ({old[name][:12]} → {new[name][:12]})")
    return lines


def _refusal(root: Path, existing: dict[str, Any], config_hash: str, changes: list[str], data: list[str]) -> str:
    parts = [f"{root} was started with config {existing.get('config_hash')}, this command has {config_hash}."]
    if changes:
        parts.append("Changed keys:\n  " + "\n  ".join(changes))
    if data:
        parts.append("Changed data:\n  " + "\n  ".join(data))
    parts.append(
        "Resume with the original settings, choose a new --run-dir, or pass --allow-config-change "
        "to keep the recorded units and continue under the new config (recorded in sessions.jsonl)."
    )
    return "\n".join(parts)


class RunStore:
    """One run directory. Open it with `RunStore.open(path)`; local paths and mounted drives are supported
    directly; an fsspec URL is worked on in a local mirror, and any run can follow a remote copy (`sync_to`), pushed
    in the background after every unit (`runners/sync.py`)."""

    def __init__(self, root: Path, remote: RunSync | None = None) -> None:
        self.root = root
        self.remote = remote
        self._journals: dict[str, Journal] = {}

    @classmethod
    def open(cls, location: str | os.PathLike[str], *, sync_to: str | None = None) -> RunStore:
        """`location`: a folder, or a URL (then the run lives in `$SEAL_CACHE/mirrors/…` and syncs to the URL).
        `sync_to`: a URL or mounted folder this local run is pushed to (and pulled from when opened)."""
        from runners.sync import SyncError, is_url

        text = os.fspath(location)
        try:
            if is_url(text):
                if sync_to and sync_to.rstrip("/") != text.rstrip("/"):
                    raise RunStoreError(f"--run-dir {text} is a URL already; --sync-to {sync_to} would be a second")
                return cls._open_synced(_mirror_of(text), text, must_reach=True)
            root = Path(text.removeprefix("file://")).expanduser()
            if root.exists() and not root.is_dir():
                raise RunStoreError(
                    f"{root} is a file, not a run directory: name a folder (a new one, or a run to resume)"
                )
            blocker = next((p for p in root.parents if p.exists()), None)
            if blocker is not None and not blocker.is_dir():
                raise RunStoreError(f"{root}: {blocker} is a file, so no run directory can be made there")
            _refuse_pushed_copy(root)
            _refuse_foreign_folder(root)
            if sync_to:
                return cls._open_synced(root, sync_to, must_reach=False)
            return cls(root)  # created by the first write, not here
        except SyncError as exc:
            raise RunStoreError(str(exc)) from None

    @classmethod
    def open_existing(cls, location: str | os.PathLike[str]) -> RunStore:
        """An existing local run, for the commands that only read one (`seal report`, `seal export`)."""
        root = Path(os.fspath(location).removeprefix("file://")).expanduser()
        if root.is_file():
            raise RunStoreError(f"{root} is a file, not a run directory: name the folder of a run")
        _refuse_pushed_copy(root)
        if not (root / "manifest.json").exists():
            raise RunStoreError(f"{root}: no manifest.json here; is this a run directory?")
        return cls(root)

    @classmethod
    def _open_synced(cls, root: Path, url: str, *, must_reach: bool) -> RunStore:
        """Attach the remote copy and pull what other machines pushed. An unreachable remote is a warning (the
        pushes are retried), unless nothing local exists to work on."""
        from runners.sync import RunSync, SyncError, normalize_target, permanent_failure, recorded_url

        target = normalize_target(url)
        recorded = recorded_url(root)
        if recorded is not None and recorded != target.rstrip("/"):
            raise SyncError(
                f"{root} syncs to {recorded} (recorded in {root}/.sync/pushed.json), not {target}: pass --sync-to "
                f"{recorded}, or delete {root}/.sync to push everything to the new place"
            )
        remote = RunSync(root, target)
        store = cls(root, remote)
        try:
            remote.pull()
        except SyncError:
            raise
        except Exception as exc:
            problem = permanent_failure(exc)
            if problem is not None:  # a target that can never work is refused before anything is written
                raise SyncError(f"cannot sync to {target}: {problem}") from None
            if must_reach and not store.manifest_path.exists():
                raise SyncError(
                    f"{target}: cannot read it ({type(exc).__name__}: {exc}); check the address and credentials "
                    "(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID … for s3://)"
                ) from None
            log.warning("%s is not reachable now (%s); working locally, pushes will be retried", target, exc)
        return store

    # -- manifest --------------------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def read_manifest(self) -> dict[str, Any] | None:
        if not self.manifest_path.exists():
            return None
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise RunStoreError(
                f"{self.manifest_path} is not valid JSON ({exc}); restore it or start a new run directory"
            ) from exc

    def start(
        self,
        config: dict[str, Any],
        config_hash: str,
        *,
        allow_config_change: bool = False,
        session: dict[str, Any] | None = None,
        data_identity: dict[str, str] | None = None,
        config_changes: Callable[[dict[str, Any]], list[str]] | None = None,
    ) -> dict[str, Any]:
        """Create the manifest, or check that this run may resume under `config_hash`.

        On a hash mismatch, `config_changes(stored_config)` lists the differences that matter (the pipeline's
        identity rule, see `runners.config.identity_changes`); none means resume. Without it every differing key
        counts. `data_identity` (name -> content hash) is recorded; a resume whose data differs is refused too.
        `allow_config_change` overrides both refusals; what changed is logged and written to sessions.jsonl."""
        manifest = self._start(config, config_hash, allow_config_change, session, data_identity, config_changes)
        if self.remote is not None:
            # Remembered now, not on the first successful push: a run whose remote is down from the start still
            # knows where it syncs, so `seal push RUN_DIR` and a resume without --sync-to finish the job.
            self.remote.remember_url()
        return manifest

    def _start(
        self,
        config: dict[str, Any],
        config_hash: str,
        allow_config_change: bool,
        session: dict[str, Any] | None,
        data_identity: dict[str, str] | None,
        config_changes: Callable[[dict[str, Any]], list[str]] | None,
    ) -> dict[str, Any]:
        from runners.provenance import collect_provenance

        existing = self.read_manifest()
        if existing is None:
            # run_id: what names this run outside its folder (a grading bundle handed to a laptop and back).
            manifest = {
                "run_id": uuid.uuid4().hex[:16],
                "config_hash": config_hash,
                "config": config,
                **collect_provenance(),
            }
            if data_identity is not None:
                manifest["data_identity"] = dict(sorted(data_identity.items()))
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".manifest.{uuid.uuid4().hex[:8]}.tmp"
            tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
            try:
                _publish_once(tmp, self.manifest_path)  # first writer wins; a racing worker reads the winner's
            except FileExistsError:
                existing = self.read_manifest()
            finally:
                tmp.unlink(missing_ok=True)
            if existing is None:
                self._append_session(config_hash, session)
                return manifest
        assert existing is not None
        changes = _config_changes(existing, config, config_hash, config_changes)
        data_changes = _data_changes(existing.get("data_identity"), data_identity)
        if (changes or data_changes) and self.only_failures():
            # Units were tried under the old settings and every one failed (e.g. on a model that cannot load):
            # there is nothing to protect, so the corrected command simply starts the run afresh.
            log.warning("%s: no unit recorded yet; restarting under the new settings: %s", self.root, changes)
            session = {**(session or {}), "replaced_unused_config": changes + data_changes}
            manifest = {**existing, "config_hash": config_hash, "config": config}
            if data_identity is not None:
                manifest["data_identity"] = dict(sorted(data_identity.items()))
            atomic_write_text(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=True))
            self._append_session(config_hash, session)
            return manifest
        if changes or data_changes:
            if not allow_config_change:
                raise RunStoreError(_refusal(self.root, existing, config_hash, changes, data_changes))
            log.warning("%s: resuming under changed settings: %s", self.root, "; ".join(changes + data_changes))
            session = {**(session or {}), "allowed_changes": changes + data_changes}
        self._append_session(config_hash, session)
        return existing

    def only_failures(self) -> bool:
        """Whether units were tried and every one failed: journal lines exist, and all are `error`."""
        stages = self.root / "stages"
        if not stages.is_dir():
            return False
        statuses = [set(Journal(f).refresh().values()) for f in stages.iterdir() if f.is_dir()]
        seen = set().union(*statuses) if statuses else set()
        return seen == {"error"}

    def _append_session(self, config_hash: str, session: dict[str, Any] | None) -> None:
        entry = {"config_hash": config_hash, "t": time.time(), "argv": sys.argv, "host": socket.gethostname()}
        entry.update(session or {})
        with open(self.root / "sessions.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    # -- stages ----------------------------------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        return self.root / "stages" / stage

    def journal(self, stage: str) -> Journal:
        if stage not in self._journals:
            self._journals[stage] = Journal(self.stage_dir(stage))
        return self._journals[stage]

    def records(self, stage: str) -> dict[str, UnitRecord]:
        return self.journal(stage).records()

    def claims_dir(self, stage: str) -> Path:
        return self.root / "claims" / stage

    def logs_dir(self) -> Path:
        path = self.root / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def report_dir(self) -> Path:
        path = self.root / "report"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- work folders ----------------------------------------------------------------------------------------
    def work_dir(self, stage: str, unit: str) -> Path:
        """`work/<stage>/<unit>/`, created on demand: a unit's scratch that survives a crash (checkpoints)."""
        path = self.root / "work" / stage / unit
        path.mkdir(parents=True, exist_ok=True)
        return path

    def remove_work_dir(self, stage: str, unit: str) -> None:
        path = self.root / "work" / stage / unit
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)

    def sweep_work(self, stage: str, recorded: set[str]) -> None:
        """Remove the work folders of recorded units (left by a worker killed between its record and cleanup)."""
        folder = self.root / "work" / stage
        for path in folder.iterdir() if folder.is_dir() else ():
            if path.name in recorded:
                shutil.rmtree(path, ignore_errors=True)

    # -- artifacts -------------------------------------------------------------------------------------------
    def artifact_path(self, stage: str, unit: str) -> Path:
        return self.root / "artifacts" / stage / unit

    @contextmanager
    def write_artifact(self, stage: str, unit: str) -> Iterator[Path]:
        """Yield a temporary folder; on success it is renamed to `artifacts/<stage>/<unit>` (replacing an old one).
        On an exception the temporary folder is removed and nothing appears."""
        final = self.artifact_path(stage, unit)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{unit}.{uuid.uuid4().hex[:8]}.partial"
        tmp.mkdir()
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if final.exists():
            trash = final.parent / f".{unit}.{uuid.uuid4().hex[:8]}.old"
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, final)
        fsync_dir(final.parent)

    def artifact(self, relative: str) -> Path:
        """The local path of an artifact a journal line names (relative to the run root). In a synced run a unit
        recorded on another machine has its artifact fetched now, on demand (the next iteration's model)."""
        path = self.root / relative
        parts = Path(relative).parts
        synced = self.remote is not None and len(parts) >= 3 and parts[0] == "artifacts"
        if not path.exists() and synced and self.remote.fetch_artifact(parts[1], parts[2]):  # type: ignore[union-attr]
            log.info("fetched %s from %s", "/".join(parts[:3]), self.remote.url)
        return path

    def close(self, sync_wait_s: float = 600.0) -> None:
        """Close the journals; in a synced run push what is left, waiting up to `sync_wait_s` seconds."""
        for journal in self._journals.values():
            journal.close()
        if self.remote is not None and not self.remote.close(sync_wait_s):
            left = self.remote.pending()
            if self.remote.permanent:  # running the command again would fail the same way
                log.warning(
                    "%d changes are not in %s: %s; they are safe in %s: fix that, then `seal push %s`",
                    len(left), self.remote.url, self.remote.last_error, self.root, self.root,
                )  # fmt: skip
                return
            log.warning(
                "%d changes are not in %s yet (%s); they are safe in %s: run the same command again, or "
                "`seal push %s`, to finish pushing",
                len(left),
                self.remote.url,
                self.remote.last_error,
                self.root,
                self.root,
            )

    def sync(self) -> None:
        """Ask for a background push of what changed (a no-op for a run that is not synced); never blocks."""
        if self.remote is not None:
            self.remote.request()


def is_pushed_copy(root: Path) -> bool:
    """Whether `root` is the remote layout `--sync-to` writes (journals as segment folders, per-machine files under
    stores/, no local .sync bookkeeping) rather than a run directory: readable only after a `seal pull`."""
    if not (root / "manifest.json").exists() or (root / ".sync").exists():
        return False
    return (root / "stores").is_dir() or any(p.is_dir() for p in root.glob("stages/*/journal"))


# What a run directory holds (besides manifest.json) before and after its first manifest is written.
_RUN_ENTRIES = frozenset({"stages", "claims", "logs", "sessions.jsonl", "artifacts", "report", "grading", "export",
                          ".sync"})  # fmt: skip


def _refuse_foreign_folder(root: Path) -> None:
    """A new run goes into a new or empty folder: one holding other files is a typo, and the run's files would be
    mixed into it (a folder with a run's own entries but no manifest yet is a run that never started: allowed)."""
    if not root.is_dir() or (root / "manifest.json").exists():
        return
    entries = {entry.name for entry in root.iterdir()}
    if entries and not entries & _RUN_ENTRIES:
        shown = ", ".join(sorted(entries)[:3]) + (", …" if len(entries) > 3 else "")
        raise RunStoreError(
            f"{root} holds other files ({shown}) and no run: name a new or empty folder for a new run, "
            "or the folder of a run to resume"
        )


def _refuse_pushed_copy(root: Path) -> None:
    if is_pushed_copy(root):
        raise RunStoreError(
            f"{root} is a pushed copy of a run (what --sync-to writes), not a run directory: "
            f"`seal pull {root} DIR` it first, then use DIR"
        )


def _mirror_of(url: str) -> Path:
    from runners.sync import mirror_root

    root = mirror_root(url)
    root.mkdir(parents=True, exist_ok=True)
    return root
