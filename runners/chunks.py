"""Which units this worker may take: `--only`, `--limit`, `--chunk k/n`, and lock-file claims between workers.

Selection order: `--only` filters the stage's canonical unit order, `--limit N` keeps the first N of that, and
`--chunk k/n` deals the rest round-robin, so chunks are disjoint, cover everything, are balanced and are the same in
every process that sees the same unit list. A stage may group its units (a task's several units): then all three
act on groups.

Claims: `claims/<stage>/<unit>.lock` is created with O_EXCL by the worker that processes the unit. The holder
refreshes the file's mtime (a heartbeat) while it works. A claim is stale when its holder is a dead process on this
host, or when its heartbeat is older than the timeout (a dead host); a stale claim is broken under a short-lived
`.break` lock so that two workers never both take it over.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


class SelectionError(ValueError):
    pass


@dataclass(frozen=True)
class Chunk:
    index: int  # 1-based
    count: int

    @classmethod
    def parse(cls, text: str) -> Chunk:
        try:
            k, n = (int(x) for x in text.split("/"))
        except ValueError:
            raise SelectionError(f"--chunk {text!r}: expected K/N with integers, e.g. --chunk 2/4") from None
        if n < 1 or not 1 <= k <= n:
            raise SelectionError(f"--chunk {text!r}: need 1 ≤ K ≤ N (chunks are numbered from 1)")
        return cls(k, n)

    def tag(self) -> str:
        return f"{self.index}of{self.count}"


def select_units(
    unit_ids: Sequence[str],
    *,
    only: Sequence[str] = (),
    limit: int | None = None,
    chunk: Chunk | None = None,
    group: Callable[[str], str] | None = None,
    strict: bool = True,
) -> list[str]:
    """Apply --only, --limit and --chunk to the stage's canonical unit order.

    All three act on groups (`group(unit)`, e.g. "task.k3" -> "task"; without it each unit is its own group), so the
    units of one group are never split between chunks. The result keeps the canonical unit order. `strict`: an
    --only name that is not a group here is an error; otherwise it simply selects nothing (a pipeline checks the
    names against all of its stages, see `check_only`)."""
    units = list(unit_ids)
    key = group or (lambda u: u)
    names = list(dict.fromkeys(key(u) for u in units))
    if only:
        known = set(names)
        unknown = [g for g in only if g not in known]
        if unknown and strict:
            sample = ", ".join(names[:5]) + (" …" if len(names) > 5 else "")
            raise SelectionError(f"--only: unknown unit id(s) {', '.join(unknown)}; units look like: {sample}")
        wanted = set(only)
        names = [g for g in names if g in wanted]
    if limit is not None:
        if limit < 0:
            raise SelectionError(f"--limit {limit}: must be ≥ 0")
        names = names[:limit]
    if chunk is not None:
        names = names[chunk.index - 1 :: chunk.count]
    if group is None:
        return names
    keep = set(names)
    return [u for u in units if key(u) in keep]


def check_only(only: Sequence[str], groups_by_stage: dict[str, set[str] | None]) -> None:
    """--only names must each be a group of some stage. `None` marks a stage whose units are not known yet (computed
    when it starts): until every stage is known a name may still match, so nothing is raised."""
    if not only or any(groups is None for groups in groups_by_stage.values()):
        return
    known = set().union(*groups_by_stage.values()) if groups_by_stage else set()
    unknown = [g for g in only if g not in known]
    if unknown:
        sample = ", ".join(sorted(known)[:5]) + (" …" if len(known) > 5 else "")
        stages = ", ".join(groups_by_stage) or "(none)"
        raise SelectionError(
            f"--only: unknown unit id(s) {', '.join(unknown)} in every stage ({stages}); units look like: {sample}"
        )


# ---------------------------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------------------------


def _process_start_time(pid: int) -> str | None:
    """Start time of a live process (guards against pid reuse), or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            stat = fh.read()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "?"
        return "?"


def worker_identity() -> dict[str, object]:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "start": _process_start_time(pid),
        "id": uuid.uuid4().hex[:12],
    }


class ClaimBoard:
    """Lock files for one stage. One instance per worker process."""

    def __init__(self, folder: Path, timeout_s: float, worker: dict[str, object] | None = None) -> None:
        self.folder = folder
        self.timeout_s = timeout_s
        self.worker = worker or worker_identity()
        self._held: set[Path] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def _path(self, unit: str) -> Path:
        return self.folder / f"{unit}.lock"

    def try_claim(self, unit: str) -> bool:
        path = self._path(unit)
        if self._create(path):
            return True
        if not self._is_stale(path):
            return False
        return self._break_and_claim(path)

    def _create(self, path: Path) -> bool:
        """Claim by making `path` appear with its holder already written. A claim file created empty and filled
        afterwards could be left empty by a SIGKILL in between, and an unreadable claim can only be judged by its
        age: a restarted worker would then skip the unit. So the holder goes into a private file that is
        hard-linked into place (atomic, and fails if the claim exists); mounts without hard links fall back to an
        exclusive create."""
        self.folder.mkdir(parents=True, exist_ok=True)
        holder = json.dumps({**self.worker, "claimed_at": time.time()})
        tmp = self.folder / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(holder, encoding="utf-8")
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links here (Google Drive, some FUSE/SMB mounts)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as fh:
                fh.write(holder)
        finally:
            tmp.unlink(missing_ok=True)
        with self._lock:
            self._held.add(path)
        self._ensure_heartbeat()
        return True

    def _is_stale(self, path: Path) -> bool:
        try:
            age = time.time() - path.stat().st_mtime
            holder = json.loads(path.read_text(encoding="utf-8") or "{}")
        except FileNotFoundError:
            return True  # released between our attempts
        except ValueError:
            holder = {}  # written only partly by a worker that died at once: judge by age
            age = time.time() - path.stat().st_mtime if path.exists() else 1e9
            return age > min(self.timeout_s, 30.0)
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            start = _process_start_time(holder["pid"])
            if start is None or (holder.get("start") not in (None, "?") and start not in ("?", holder["start"])):
                return True  # its process is gone (or the pid now belongs to another process)
        return age > self.timeout_s

    def _break_and_claim(self, path: Path) -> bool:
        breaker = path.with_suffix(".break")
        try:
            fd = os.open(breaker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:  # a breaker that died mid-break leaves this behind; it is tiny-lived otherwise
                if time.time() - breaker.stat().st_mtime > 60:
                    breaker.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return False
        os.close(fd)
        try:
            if not self._is_stale(path):  # re-check under the breaker lock: someone may have just claimed it
                return False
            path.unlink(missing_ok=True)
            return self._create(path)
        finally:
            breaker.unlink(missing_ok=True)

    def sweep(self, finished: set[str]) -> int:
        """Remove stale claims left by dead workers on units that are already recorded (killed after the
        journal write, before the release). Returns how many were removed."""
        removed = 0
        for path in self.folder.glob("*.lock") if self.folder.is_dir() else ():
            if path.stem in finished and path not in self._held and self._is_stale(path):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def release(self, unit: str) -> None:
        path = self._path(unit)
        with self._lock:
            self._held.discard(path)
        path.unlink(missing_ok=True)

    # A daemon thread refreshes every held claim's mtime so a live worker's long unit never looks stale.
    def _ensure_heartbeat(self) -> None:
        if self._heartbeat is None or not self._heartbeat.is_alive():
            self._heartbeat = threading.Thread(target=self._beat, name="claim-heartbeat", daemon=True)
            self._heartbeat.start()

    def _beat(self) -> None:
        interval = max(0.5, min(60.0, self.timeout_s / 4))
        while not self._stop.wait(interval):
            with self._lock:
                held = list(self._held)
            for path in held:
                try:
                    os.utime(path)
                except FileNotFoundError:
                    pass

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            held = list(self._held)
            self._held.clear()
        for path in held:
            path.unlink(missing_ok=True)
