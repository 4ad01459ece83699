"""Runs synced to object storage (s3://, gs://, any fsspec URL) or a mounted drive, pushed in the background.

The local run directory stays the authority, with every local guarantee; a remote copy follows it. Object stores
have no append, no rename and no O_EXCL, so the remote layout only ever adds whole objects:

    manifest.json, stages/<stage>/units.json, grading/…     shared files, uploaded whole when they change
    stages/<stage>/journal/<group>/<start>-<end>.jsonl       a journal as immutable byte-range segments
    artifacts/<stage>/<unit>/attempt-<id>/…                  an artifact's files, uploaded under a fresh prefix …
    artifacts/<stage>/<unit>/commit.json                     … then committed by this small object, written last
    stores/<store id>/sessions.jsonl, stores/<store id>/logs/…   per-machine files, for the record

A `<group>` is `<store id>.<journal name>`: each local directory has its own id (`.sync/id`), so machines that
sync to one URL never write the same key. Readers trust only commits: an upload cut off midway leaves an attempt no
commit names, which the next push of that artifact deletes. A reader rebuilds another store's journal from the
contiguous segments it finds (`stages/<stage>/journal@<group>.jsonl`, merged by unit id like any journal); a gap
(a segment still to come) only delays what follows it.

What was pushed is remembered in `.sync/pushed.json` (a resume does not upload gigabytes again); an artifact
replaced locally has a new fingerprint and is pushed again. Artifacts are pulled on demand (`fetch_artifact`),
everything else when a store opens. Pushing runs in one background thread: `request()` never blocks; a failed pass
is retried with back-off and loses nothing (the local files are untouched, the ledger only names what arrived).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SYNC_DIR = ".sync"
LEDGER = "pushed.json"
COMMIT = "commit.json"
# Per-machine files: uploaded under stores/<id>/ (two machines' logs and sessions never overwrite each other) and
# at most every STORE_FILES_EVERY_S seconds (a log grows on every step), always on flush.
STORE_FILES = ("sessions.jsonl", "logs")
STORE_FILES_EVERY_S = 60.0
# Never pushed: scratch, claims (local to a machine), sync bookkeeping, caches that change under an open handle.
_SKIP_TOP = {SYNC_DIR, "work", "claims", "artifacts", "export"}
_SKIP_SUFFIXES = (".tmp", ".partial", ".lock", ".sqlite", ".sqlite-wal", ".sqlite-shm", ".sqlite-journal")
# fsspec protocols whose implementation is a separate package: the install line to print when it is missing.
BACKENDS = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "hf": "huggingface_hub",
}


class SyncError(RuntimeError):
    """A sync location that cannot be used (missing fsspec back-end, unreadable ledger, another URL recorded)."""


def is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def open_remote(url: str) -> tuple[Any, str]:
    """(filesystem, root path) for `url`; a missing back-end is a one-line error with its install command."""
    import fsspec

    protocol = url.split("://", 1)[0] if is_url(url) else "file"
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except ImportError:
        package = BACKENDS.get(protocol, f"the fsspec back-end for {protocol}://")
        raise SyncError(
            f"{url}: {protocol}:// needs {package}, which is not installed: pip install {package} "
            "(or pip install 'seal-harness[cloud]')"
        ) from None
    except ValueError as exc:  # an unknown protocol
        raise SyncError(f"{url}: {exc}") from None
    return fs, root.rstrip("/")


def normalize_target(location: str) -> str:
    """A URL as given, a local folder as an absolute path (symlinks kept): the form the ledger records and compares."""
    return location if "://" in location else os.path.abspath(os.path.expanduser(location))


def _file_on_the_way(path: str | None) -> str | None:
    """The first existing ancestor of `path` that is a file (where a folder was needed), if any."""
    if not path:
        return None
    for parent in Path(path).parents:
        if parent.exists():
            return str(parent) if parent.is_file() else None
    return None


def permanent_failure(exc: BaseException) -> str | None:
    """What to fix when `exc` will fail again however often it is retried (None: it may pass next time, e.g. a
    network error or a server that is down). Matched by name too: botocore and s3fs are optional imports."""
    name, text = type(exc).__name__, str(exc)
    if isinstance(exc, (NotADirectoryError, FileExistsError)):
        where = _file_on_the_way(exc.filename) or exc.filename or "a part of the path"
        return f"{where} is a file, where a folder is needed: name a folder (or a URL)"
    if name in ("NoCredentialsError", "PartialCredentialsError") or "Unable to locate credentials" in text:
        return (
            "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for a server "
            "other than AWS), or configure s3fs/fsspec's credentials (~/.aws/credentials, AWS_PROFILE)"
        )
    if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        return f"the bucket does not exist ({text}): create it, or name an existing one"
    if isinstance(exc, PermissionError):
        return f"permission denied ({text}): check the credentials, or the folder's permissions"
    return None


def recorded_url(root: Path) -> str | None:
    """The URL a local run directory syncs to, as its ledger records it (None: not synced)."""
    path = root / SYNC_DIR / LEDGER
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("url")
    except ValueError as exc:
        raise SyncError(f"{path} is not valid JSON ({exc}); delete it to push everything again") from None


def _tree_fingerprint(folder: Path) -> tuple[str, dict[str, int]]:
    """A fingerprint of a folder's files (names, sizes, modification times) and their sizes by relative name."""
    files: dict[str, int] = {}
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        rel = path.relative_to(folder).as_posix()
        files[rel] = stat.st_size
        digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24], files


def _file_fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


@contextmanager
def _flock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes on one machine (several workers may share a run directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class PushSummary:
    uploaded: list[str] = field(default_factory=list)  # remote keys written
    bytes: int = 0


@dataclass
class PullSummary:
    files: list[str] = field(default_factory=list)  # shared files restored
    journal_lines: int = 0  # lines appended from the journals other stores pushed
    artifacts: list[str] = field(default_factory=list)


class RunSync:
    """The link between the local run directory `root` and the remote copy at `url`."""

    def __init__(self, root: Path, url: str, *, retry_max_s: float = 60.0) -> None:
        self.root = root
        self.url = url.rstrip("/")
        self.fs, self.remote_root = open_remote(self.url)
        self.retry_max_s = retry_max_s
        self._ledger_lock = threading.Lock()
        self._store_files_at = 0.0
        # background pushing
        self._owner_pid = os.getpid()  # a forked child never pushes: its parent does
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stop = False
        self._state = threading.Condition()
        self._requested = 0  # request generation
        self._completed = 0  # generation of the last pass that finished without error
        self._force_store_files = False
        self._give_up = False  # set by close(): a failing pass ends the thread instead of retrying
        self.last_error: str | None = None
        self.permanent = False  # last_error is one that retrying cannot fix
        self.failures = 0

    # -- identity and ledger ---------------------------------------------------------------------------------
    @property
    def sync_dir(self) -> Path:
        return self.root / SYNC_DIR

    @property
    def store_id(self) -> str:
        path = self.sync_dir / "id"
        if not path.exists():
            self.sync_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"id.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_text(uuid.uuid4().hex[:12], encoding="utf-8")
            try:
                os.link(tmp, path)  # first writer wins
            except OSError:
                if not path.exists():
                    os.replace(tmp, path)  # a mount without hard links
            finally:
                tmp.unlink(missing_ok=True)
        return path.read_text(encoding="utf-8").strip()

    def _read_ledger(self) -> dict[str, Any]:
        path = self.sync_dir / LEDGER
        empty: dict[str, Any] = {"url": self.url, "files": {}, "journals": {}, "artifacts": {}}
        if not path.is_file():
            return empty
        try:
            ledger = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            log.warning("%s is unreadable; everything will be pushed again", path)
            return empty
        if ledger.get("url") != self.url:
            return empty  # pushed elsewhere before: nothing of it is at this URL
        for key in ("files", "journals", "artifacts"):
            ledger.setdefault(key, {})
        return ledger

    def ledger(self) -> dict[str, Any]:
        with self._ledger_lock, _flock(self.sync_dir / "ledger.lock"):
            return self._read_ledger()

    def _update_ledger(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Read, change and atomically rewrite the ledger, under a lock shared by every process on this machine."""
        from runners.store import atomic_write_text

        with self._ledger_lock, _flock(self.sync_dir / "ledger.lock"):
            ledger = self._read_ledger()
            change(ledger)
            atomic_write_text(self.sync_dir / LEDGER, json.dumps(ledger, indent=1, sort_keys=True))

    def remember_url(self) -> None:
        """Record this URL in the ledger now (a pull does; the next run in this folder then keeps syncing here)."""
        self._update_ledger(lambda ledger: None)

    def read_remote_json(self, relative: str) -> Any:
        """A JSON file of the remote copy (e.g. its manifest.json)."""
        return json.loads(self.fs.cat_file(self._remote(relative)))

    def _remote(self, relative: str) -> str:
        return f"{self.remote_root}/{relative}"

    # -- what there is to push -------------------------------------------------------------------------------
    def _shared_files(self) -> Iterator[tuple[str, Path]]:
        if not self.root.is_dir():
            return
        for folder, dirs, names in os.walk(self.root):
            here = Path(folder)
            top = here == self.root
            # Pruned, not filtered: artifacts and scratch can hold many thousands of files.
            dirs[:] = sorted(
                d for d in dirs if not d.startswith(".") and not (top and (d in _SKIP_TOP or d in STORE_FILES))
            )
            for name in sorted(names):
                if name.startswith(".") or name.endswith(_SKIP_SUFFIXES) or (top and name in STORE_FILES):
                    continue
                if here.parent.name == "stages" and here.parent.parent == self.root and name.startswith("journal"):
                    continue  # journals travel as segments
                path = here / name
                yield path.relative_to(self.root).as_posix(), path

    def _store_files(self) -> Iterator[tuple[str, Path]]:
        for name in STORE_FILES:
            path = self.root / name
            paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for p in paths:
                if p.is_file():
                    yield p.relative_to(self.root).as_posix(), p

    def _own_journals(self) -> Iterator[Path]:
        stages = self.root / "stages"
        if stages.is_dir():
            yield from sorted(p for p in stages.glob("*/journal*.jsonl") if "@" not in p.name)

    def _artifact_dirs(self) -> Iterator[Path]:
        folder = self.root / "artifacts"
        if folder.is_dir():
            yield from sorted(p for p in folder.glob("*/*") if p.is_dir() and not p.name.startswith("."))

    def pending(self) -> list[str]:
        """Local paths (relative) with changes not pushed yet."""
        ledger = self.ledger()
        out: list[str] = []
        for rel, path in [*self._shared_files(), *self._store_files()]:
            if ledger["files"].get(rel) != _file_fingerprint(path):
                out.append(rel)
        for path in self._own_journals():
            rel = path.relative_to(self.root).as_posix()
            if ledger["journals"].get(rel, 0) < _complete_size(path):
                out.append(rel)
        for folder in self._artifact_dirs():
            rel = folder.relative_to(self.root).as_posix()
            if ledger["artifacts"].get(rel, {}).get("fingerprint") != _tree_fingerprint(folder)[0]:
                out.append(rel)
        return out

    # -- pushing ---------------------------------------------------------------------------------------------
    def push(self, *, store_files: bool = True) -> PushSummary:
        """One pass: upload everything not pushed yet. Raises on a failed upload (what arrived stays recorded).

        Order matters to a reader elsewhere: the manifest first, then artifacts, then the journals whose lines name
        them, so a unit never looks done remotely before its artifact is committed."""
        summary = PushSummary()
        if not (self.root / "manifest.json").exists():
            return summary  # not a run yet (a refused command leaves nothing locally, and nothing remotely)
        with _flock(self.sync_dir / "push.lock"):  # one pusher at a time per machine
            ledger = self.ledger()
            self._push_file("manifest.json", self.root / "manifest.json", ledger, summary)
            for folder in self._artifact_dirs():
                self._push_artifact(folder, ledger, summary)
            for rel, path in self._shared_files():
                self._push_file(rel, path, ledger, summary)
            for path in self._own_journals():
                self._push_journal(path, ledger, summary)
            if store_files:
                for rel, path in self._store_files():
                    self._push_file(rel, path, ledger, summary, remote=f"stores/{self.store_id}/{rel}")
                self._store_files_at = time.monotonic()
        return summary

    def _put(self, local: Path, remote_rel: str, summary: PushSummary) -> None:
        self._write(remote_rel, local=local)
        summary.uploaded.append(remote_rel)
        summary.bytes += local.stat().st_size

    def _write(self, remote_rel: str, *, local: Path | None = None, data: bytes | None = None) -> None:
        """One whole object. An object store's PUT is all-or-nothing; a folder (a mounted drive) gets the same by
        a temporary sibling renamed into place."""
        target = self._remote(remote_rel)
        parent = target.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        if getattr(self.fs, "protocol", None) in ("file", ("file", "local")):
            tmp = f"{parent}/.{target.rsplit('/', 1)[1]}.{uuid.uuid4().hex[:8]}.tmp"
            if local is not None:
                shutil.copyfile(local, tmp)
            else:
                Path(tmp).write_bytes(data or b"")
            os.replace(tmp, target)
        elif local is not None:
            self.fs.put_file(str(local), target)
        else:
            self.fs.pipe_file(target, data or b"")

    def _push_file(
        self, rel: str, path: Path, ledger: dict[str, Any], summary: PushSummary, *, remote: str | None = None
    ) -> None:
        if not path.is_file():
            return
        fingerprint = _file_fingerprint(path)
        if ledger["files"].get(rel) == fingerprint:
            return
        self._put(path, remote or rel, summary)  # one PUT: readers see the old object or the whole new one
        ledger["files"][rel] = fingerprint
        self._update_ledger(lambda led: led["files"].__setitem__(rel, fingerprint))

    def _push_journal(self, path: Path, ledger: dict[str, Any], summary: PushSummary) -> None:
        rel = path.relative_to(self.root).as_posix()
        start = int(ledger["journals"].get(rel, 0))
        end = _complete_size(path)  # whole lines only: a line being written is pushed next time
        if end <= start:
            return
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read(end - start)
        stage = path.parent.name
        key = f"stages/{stage}/journal/{self.store_id}.{path.stem}/{start:012d}-{end:012d}.jsonl"
        self._write(key, data=data)
        summary.uploaded.append(key)
        summary.bytes += len(data)
        ledger["journals"][rel] = end
        self._update_ledger(lambda led: led["journals"].__setitem__(rel, end))

    def _push_artifact(self, folder: Path, ledger: dict[str, Any], summary: PushSummary) -> None:
        rel = folder.relative_to(self.root).as_posix()
        fingerprint, files = _tree_fingerprint(folder)
        if ledger["artifacts"].get(rel, {}).get("fingerprint") == fingerprint:
            return
        attempt = f"attempt-{self.store_id}-{uuid.uuid4().hex[:8]}"
        for name in files:  # a cut-off upload leaves files under an attempt no commit names
            self._put(folder / name, f"{rel}/{attempt}/{name}", summary)
        if _tree_fingerprint(folder)[0] != fingerprint:
            return  # replaced while uploading: the next pass pushes the new one
        commit = {"attempt": attempt, "files": files, "store": self.store_id, "t": time.time()}
        self._write(f"{rel}/{COMMIT}", data=json.dumps(commit, sort_keys=True).encode())  # written last
        summary.uploaded.append(f"{rel}/{COMMIT}")
        entry = {"fingerprint": fingerprint, "attempt": attempt}
        ledger["artifacts"][rel] = entry
        self._update_ledger(lambda led: led["artifacts"].__setitem__(rel, entry))
        self._collect_attempts(rel, keep=attempt)

    def _collect_attempts(self, rel: str, *, keep: str) -> None:
        """Delete this store's attempts of `rel` that the commit does not name (cut-off or replaced uploads).
        Other stores' attempts are theirs to delete: one may be committing right now."""
        mine = f"attempt-{self.store_id}-"
        try:
            self.fs.invalidate_cache()
            for path in self.fs.ls(self._remote(rel), detail=False):
                name = path.rstrip("/").rsplit("/", 1)[-1]
                if name.startswith(mine) and name != keep:
                    self.fs.rm(path, recursive=True)
        except Exception as exc:  # garbage left for later is harmless: readers trust commits only
            log.debug("could not collect old attempts of %s: %s", rel, exc)

    # -- pulling ---------------------------------------------------------------------------------------------
    def remote_has_run(self) -> bool:
        try:
            self.fs.cat_file(self._remote("manifest.json"))
        except FileNotFoundError:
            return False
        return True

    def pull(self, *, artifacts: bool = False) -> PullSummary:
        """Bring what other stores pushed: shared files missing here, their journals' new segments, and (when
        asked) every committed artifact. Nothing local is overwritten; our own journals are ours."""
        from runners.store import atomic_write_bytes

        summary = PullSummary()
        if not self.remote_has_run():
            return summary
        self.fs.invalidate_cache()
        keys = [k[len(self.remote_root) + 1 :] for k in self.fs.find(self.remote_root)]
        own_prefix = f"{self.store_id}."
        segments: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
        commits: list[str] = []
        for key in keys:
            parts = key.split("/")
            if parts[0] == "stores" or any(p.startswith(".") for p in parts):
                continue  # per-machine files, and a folder target's temporary files
            if parts[0] == "artifacts":
                if len(parts) == 4 and parts[3] == COMMIT:
                    commits.append("/".join(parts[:3]))
                continue
            if parts[0] == "stages" and len(parts) == 5 and parts[2] == "journal":
                group, name = parts[3], parts[4]
                if group.startswith(own_prefix):
                    continue
                start, end = (int(x) for x in name.removesuffix(".jsonl").split("-"))
                segments.setdefault((parts[1], group), []).append((start, end, key))
                continue
            local = self.root / key
            if not local.exists():
                local.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(local, self.fs.cat_file(self._remote(key)))
                fingerprint = _file_fingerprint(local)
                self._update_ledger(lambda led, k=key, f=fingerprint: led["files"].__setitem__(k, f))
                summary.files.append(key)
        for (stage, group), found in sorted(segments.items()):
            summary.journal_lines += self._pull_journal(stage, group, found)
        if artifacts:
            for rel in commits:
                if not (self.root / rel).exists() and self._fetch(rel):
                    summary.artifacts.append(rel)
        return summary

    def _pull_journal(self, stage: str, group: str, found: list[tuple[int, int, str]]) -> int:
        """Append the contiguous new bytes of another store's journal to `journal@<group>.jsonl`."""
        from runners.store import atomic_write_bytes

        local = self.root / "stages" / stage / f"journal@{group}.jsonl"
        have = local.read_bytes() if local.exists() else b""
        new = b""
        position = len(have)
        for start, end, key in sorted(found):
            if end <= position:
                continue
            if start > position:
                break  # a segment still to come: what follows waits for it
            new += self.fs.cat_file(self._remote(key))[position - start :]
            position = end
        if new:
            local.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(local, have + new)
        return new.count(b"\n")

    def fetch_artifact(self, stage: str, unit: str) -> bool:
        """Download a committed artifact this directory lacks (True when it is now here)."""
        rel = f"artifacts/{stage}/{unit}"
        return (self.root / rel).exists() or self._fetch(rel)

    def _fetch(self, rel: str) -> bool:
        try:
            commit = json.loads(self.fs.cat_file(self._remote(f"{rel}/{COMMIT}")))
        except FileNotFoundError:
            return False
        final = self.root / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.partial"
        try:
            for name in commit["files"]:
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(self._remote(f"{rel}/{commit['attempt']}/{name}"), str(target))
            if final.exists():
                shutil.rmtree(tmp)
                return True  # fetched meanwhile by another worker
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        entry = {"fingerprint": _tree_fingerprint(final)[0], "attempt": commit["attempt"]}
        self._update_ledger(lambda led: led["artifacts"].__setitem__(rel, entry))  # pulled, so not pushed back
        return True

    # -- background pushing ----------------------------------------------------------------------------------
    def request(self) -> None:
        """Ask for a push pass soon; returns at once. Only the process that opened the store pushes."""
        if os.getpid() != self._owner_pid:
            return
        with self._state:
            self._requested += 1
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"seal-sync {self.url}", daemon=True)
            self._thread.start()
        self._wake.set()

    def _loop(self) -> None:
        delay, retry_at = min(1.0, self.retry_max_s), 0.0
        while True:
            if self.last_error is None:
                self._wake.wait()
            else:  # backing off: a unit finishing meanwhile does not hammer a remote that is down
                while not self._stop and (left := retry_at - time.monotonic()) > 0:
                    self._wake.wait(timeout=left)
                    self._wake.clear()
            self._wake.clear()
            with self._state:
                if self._stop and self._completed >= self._requested:
                    return
                target = self._requested
                forced, self._force_store_files = self._force_store_files, False
            due = forced or time.monotonic() - self._store_files_at >= STORE_FILES_EVERY_S
            try:
                self.push(store_files=due)
            except Exception as exc:
                self.failures += 1
                problem = permanent_failure(exc)
                if problem is not None:  # retrying cannot help: say what to fix, once, and stop
                    log.warning("push to %s failed: %s; local files are safe", self.url, problem)
                    self.last_error, self.permanent = problem, True
                    with self._state:
                        self._state.notify_all()
                    return
                if self.last_error is None or self.failures % 10 == 0:
                    log.warning("push to %s failed (%s); retrying in %.0f s, local files are safe", self.url, exc,
                                delay)  # fmt: skip
                self.last_error = f"{type(exc).__name__}: {exc}"
                with self._state:
                    self._force_store_files |= forced
                    if self._stop and self._give_up:
                        self._state.notify_all()
                        return
                retry_at = time.monotonic() + delay
                delay = min(delay * 2, self.retry_max_s)
                continue
            if self.last_error is not None:
                log.info("push to %s works again after %d failed attempts", self.url, self.failures)
            self.last_error, delay = None, min(1.0, self.retry_max_s)
            with self._state:
                self._completed = max(self._completed, target)
                self._state.notify_all()
                if self._stop and self._completed >= self._requested:
                    return

    def flush(self, timeout: float) -> bool:
        """Push everything now (store files included) and wait up to `timeout` seconds; True when all arrived."""
        if os.getpid() != self._owner_pid:
            return True
        with self._state:
            self._force_store_files = True
        self.request()
        with self._state:
            goal = self._requested
            # A failure retrying cannot fix ends the wait early (the thread has stopped): not everything arrived.
            self._state.wait_for(lambda: self._completed >= goal or self.permanent, timeout=timeout)
            return self._completed >= goal

    def close(self, timeout: float) -> bool:
        """Final push (waiting up to `timeout`), then stop the thread. False: something is still only local."""
        if self._thread is None:
            return True
        done = self.flush(timeout)
        with self._state:
            self._stop = True
            self._give_up = True
        self._wake.set()
        self._thread.join(timeout=5)
        return done


def _complete_size(path: Path) -> int:
    """The size of `path` up to and including its last newline (a line still being written is left out)."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb") as fh:
        block = 4096
        position = size
        while position > 0:
            step = min(block, position)
            fh.seek(position - step)
            chunk = fh.read(step)
            index = chunk.rfind(b"\n")
            if index >= 0:
                return position - step + index + 1
            position -= step
    return 0


def mirror_root(url: str) -> Path:
    """Where a run directory given as a URL is worked on locally: `$SEAL_CACHE/mirrors/<hash of the URL>`."""
    base = Path(os.environ.get("SEAL_CACHE", Path.home() / ".cache" / "seal"))
    return base / "mirrors" / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
