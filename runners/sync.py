"""Run directories on fsspec URLs (gs://, s3://, hf:// …) through a local mirror.

Object stores have no append, no O_EXCL and no atomic folder rename, so the run is worked on in a local mirror
(`$SEAL_CACHE/mirrors/<hash of the URL>`) with all the local guarantees, and pushed after every unit:
- each mirror writes its own journal, `stages/<stage>/journal-<mirror id>.jsonl`, so chunks running on different
  machines never overwrite each other; readers merge every `journal*.jsonl` by unit id;
- artifacts are uploaded once complete (they are complete once renamed into place locally);
- opening pulls the manifest and every journal, so a new machine resumes where the others stopped.
Claims stay local to a mirror: split work between machines with `--chunk`, not with shared claims.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from runners.store import Journal, RunStore


def _mirror_root(url: str) -> Path:
    base = Path(os.environ.get("SEAL_CACHE", Path.home() / ".cache" / "seal"))
    return base / "mirrors" / hashlib.sha256(url.encode()).hexdigest()[:16]


class MirroredRunStore(RunStore):
    def __init__(self, root: Path, url: str) -> None:
        super().__init__(root)
        import fsspec

        self.url = url.rstrip("/")
        self.fs, self.remote_root = fsspec.core.url_to_fs(self.url)
        id_file = root / ".mirror-id"
        if not id_file.exists():
            id_file.write_text(uuid.uuid4().hex[:12], encoding="utf-8")
        self.mirror_id = id_file.read_text(encoding="utf-8").strip()
        self._pushed_sizes: dict[str, int] = {}

    @classmethod
    def open_url(cls, url: str) -> MirroredRunStore:
        root = _mirror_root(url)
        root.mkdir(parents=True, exist_ok=True)
        store = cls(root, url)
        store.pull()
        return store

    def _remote(self, relative: str) -> str:
        return f"{self.remote_root.rstrip('/')}/{relative}"

    def pull(self) -> None:
        """Fetch the manifest and every journal written by other mirrors (ours is the authority for our own)."""
        if not self.fs.exists(self.remote_root):
            return
        manifest = self._remote("manifest.json")
        if self.fs.exists(manifest) and not self.manifest_path.exists():
            self.fs.get(manifest, str(self.manifest_path))
        for path in self.fs.glob(self._remote("stages/*/units.json")):  # a frozen unit list is never recomputed
            local = self.stage_dir(path.rstrip("/").split("/")[-2]) / "units.json"
            if not local.exists():
                local.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get(path, str(local))
        own = f"journal-{self.mirror_id}.jsonl"
        for path in self.fs.glob(self._remote("stages/*/journal*.jsonl")):
            stage, name = path.rstrip("/").split("/")[-2:]
            if name == own:
                continue
            local = self.stage_dir(stage) / name
            local.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get(path, str(local))

    def journal(self, stage: str) -> Journal:
        if stage not in self._journals:
            self._journals[stage] = Journal(self.stage_dir(stage), name=f"journal-{self.mirror_id}.jsonl")
        return self._journals[stage]

    def sync(self) -> None:
        """Upload what changed: the manifest once, our journals whenever they grew, new complete artifacts."""
        frozen = [*self.root.glob("stages/*/units.json")]  # dynamic unit lists: every machine must see the same
        for local in [self.manifest_path, *frozen, *self.root.glob("stages/*/journal-" + self.mirror_id + ".jsonl")]:
            if not local.exists():
                continue
            size = local.stat().st_size
            relative = local.relative_to(self.root).as_posix()
            if self._pushed_sizes.get(relative) == size:
                continue
            self.fs.makedirs(self._remote(str(Path(relative).parent)), exist_ok=True)
            self.fs.put_file(str(local), self._remote(relative))
            self._pushed_sizes[relative] = size
        artifacts = self.root / "artifacts"
        if artifacts.is_dir():
            for unit_dir in artifacts.glob("*/*"):
                if unit_dir.name.startswith(".") or not unit_dir.is_dir():
                    continue  # temporary folders are not complete yet
                relative = unit_dir.relative_to(self.root).as_posix()
                if relative in self._pushed_sizes:
                    continue
                self.fs.put(str(unit_dir), self._remote(relative), recursive=True)
                self._pushed_sizes[relative] = 0
