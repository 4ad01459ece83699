"""`--executor ray`: a stage's units as tasks of Ray actors, with selection, claims and the journal left to the driver.

The driver (this process) runs `run_stage` exactly as locally: it selects, skips what is journaled, claims each unit
before it is handed out and appends the fsynced journal line when the result comes back, so a local worker and a Ray
driver on one run directory never process a unit twice, and a restarted driver recomputes at most what was in
flight. Each concurrent slot is one actor: it rebuilds the pipeline's stages from (config, run directory, stage
name) — a `make_processor` closure holds the driver's run store, open journals included, so it is rebuilt, not
shipped — makes the stage's processor on its first unit, keeps it (the model) across units and closes it when the
stage ends; the actor process itself (its imports) serves the run's next stages.

Failures: a worker process that dies (SIGKILL, the machine's OOM killer) is restarted by Ray and its unit retried
(`max_restarts`, `max_task_retries`): at-least-once, and units are idempotent, so the retried unit's line is the one
an uninterrupted run writes. A Python exception inside a unit never reaches Ray: `_process_one` records it as
`error`, exactly as locally. A worker that dies more often than Ray retries becomes an `error` line, retried on the
next run.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runners.config import Config
from runners.stage import ProcessFn, StageSpec, process_unit
from runners.store import UnitRecord

log = logging.getLogger(__name__)

# Ray must contact nothing but this machine unless told to (operations facts §Ray): set before `import ray`.
# RAY_USAGE_STATS_REPORT_URL: a head started with `ray start` (not `ray.init`) still posts a "usage stats disabled"
# report to usage-stats.ray.io (dashboard/modules/usage_stats, Ray 2.60); this points it at a closed local port.
NETWORK_HYGIENE = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
}
RETRIES = 3  # worker deaths retried per unit (Ray's default for tasks)


def import_ray() -> Any:
    for key, value in NETWORK_HYGIENE.items():
        os.environ.setdefault(key, value)
    try:
        import ray
    except ImportError:
        raise RuntimeError(
            "run.executor=ray needs Ray: pip install -c constraints/cpu.txt '.[ray]' (or constraints/gpu.txt)"
        ) from None
    return ray


@dataclass(frozen=True)
class RaySettings:
    cpus_per_unit: float = 1.0
    gpus_per_unit: float = 0.0
    workers: int = 0  # 0: as many as the cluster's resources allow

    @classmethod
    def from_config(cls, cfg: Config) -> RaySettings:
        run = cfg.run
        return cls(run.ray_cpus_per_unit, run.ray_gpus_per_unit, run.ray_workers)

    def slots(self, resources: dict[str, float]) -> int:
        """How many units may be in flight: what the user asked, else what the cluster's resources hold."""
        if self.workers:
            return self.workers
        fit = math.floor(resources.get("CPU", 1.0) / self.cpus_per_unit + 1e-9)
        if self.gpus_per_unit > 0:
            fit = min(fit, math.floor(resources.get("GPU", 0.0) / self.gpus_per_unit + 1e-9))
        return max(1, fit)


class RaySession:
    """Connects to a cluster (`address`), or starts a local instance that stops with `close()`."""

    def __init__(self, address: str | None, *, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
        self.ray = import_ray()
        self._pools: list[ActorPool] = []
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, "configure_logging": False}
        if address:
            options["address"] = address
        else:
            # A short temp dir: unix socket paths are limited to 107 bytes; loopback only.
            options.update(num_cpus=num_cpus, num_gpus=num_gpus, _node_ip_address="127.0.0.1")
            options["_temp_dir"] = os.environ.get("SEAL_RAY_TEMP_DIR") or f"/tmp/seal-ray-{os.getuid()}"
        # The driver's modules (runners, seal, ttt) must import in the workers: a cluster of other machines gets them
        # from their own install of this package; a local instance inherits sys.path through PYTHONPATH.
        if not address:
            root = str(Path(__file__).resolve().parents[1])
            path = os.environ.get("PYTHONPATH", "")
            if root not in path.split(os.pathsep):
                os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, path) if p)
        started = time.perf_counter()
        if address:
            self.ray.init(**options)
        else:
            self._init_local(options)
        log.info("ray: %s in %.1f s, resources %s", address or "local instance", time.perf_counter() - started,
                 self.ray.cluster_resources())  # fmt: skip

    def _init_local(self, options: dict[str, Any]) -> None:
        """A local instance whose daemons see a HOME holding an empty `ray_bootstrap_config.yaml`: without one, the
        dashboard probes cloud-metadata addresses (169.254.169.254) to name the cloud it runs in. The workers get
        the user's HOME back (model caches live under it)."""
        home = Path(options["_temp_dir"]) / "home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "ray_bootstrap_config.yaml").write_text("{}\n", encoding="utf-8")
        user_home = os.environ.get("HOME")
        options["runtime_env"] = {"env_vars": {"HOME": user_home or str(Path.home())}}
        os.environ["HOME"] = str(home)
        try:
            self.ray.init(**options)
        finally:
            if user_home is None:
                os.environ.pop("HOME", None)
            else:
                os.environ["HOME"] = user_home

    def make_executor(self, cfg: Config, run_root: Path) -> Any:
        settings = RaySettings.from_config(cfg)
        pool = ActorPool(self.ray, cfg, run_root, settings)
        self._pools.append(pool)

        def make(spec: StageSpec, *, worker_name: str, config_hash: str | None, oom_retries: int, todo: int = 0):  # type: ignore[no-untyped-def]
            slots = 1 if spec.single else min(settings.slots(self.ray.cluster_resources()), max(1, todo))
            return RayExecutor(self.ray, pool, spec, slots, config_hash, oom_retries)

        return make

    def release_actors(self) -> None:
        """End every actor this session made (their CPUs and GPUs go back to the cluster)."""
        for pool in self._pools:
            pool.close()
        self._pools = []

    def close(self) -> None:
        self.release_actors()
        if self.ray.is_initialized():
            self.ray.shutdown()


class ActorPool:
    """The run's actors. A stage borrows up to its slots and gives them back when it ends, its processor closed:
    the model leaves memory, the worker process (its imports: torch, transformers) stays for the next stage."""

    def __init__(self, ray: Any, cfg: Config, run_root: Path, settings: RaySettings) -> None:
        self.ray, self.cfg, self.run_root, self.settings = ray, cfg, run_root, settings
        self.idle: list[Any] = []
        self.all: list[Any] = []

    def borrow(self) -> Any:
        if self.idle:
            return self.idle.pop()
        options: dict[str, Any] = {"num_cpus": self.settings.cpus_per_unit, "num_gpus": self.settings.gpus_per_unit}
        actor = _actor_class(self.ray).options(**options).remote(self.cfg, str(self.run_root), options)
        self.all.append(actor)
        return actor

    def give_back(self, actors: list[Any]) -> None:
        """Each actor closes the stage's processor first; one that cannot (dead, stuck) is dropped."""
        closing = {actor.close.remote(): actor for actor in actors}
        if not closing:
            return
        ready, stuck = self.ray.wait(list(closing), num_returns=len(closing), timeout=120)
        for ref in ready:
            try:
                self.ray.get(ref)
                self.idle.append(closing[ref])
            except self.ray.exceptions.RayError:
                self.drop(closing[ref])
        for ref in stuck:
            self.drop(closing[ref])

    def drop(self, actor: Any) -> None:
        if actor in self.all:
            self.all.remove(actor)
        try:
            self.ray.kill(actor)
        except Exception:
            pass

    def close(self) -> None:
        for actor in list(self.all):
            self.drop(actor)
        self.idle = []


class RayExecutor:
    """One stage's units on up to `slots` actors, one unit in flight per actor (`ray.wait` bounds the work)."""

    def __init__(
        self, ray: Any, pool: ActorPool, spec: StageSpec, slots: int, config_hash: str | None, oom_retries: int
    ) -> None:
        self.ray, self.pool, self.spec, self.slots = ray, pool, spec, slots
        self.config_hash, self.oom_retries = config_hash, oom_retries
        self.actors: list[Any] = []  # borrowed from the pool for this stage
        self.idle: list[Any] = []
        self.in_flight: dict[Any, tuple[str, Any]] = {}  # ObjectRef -> (unit, actor)

    def submit(self, unit: str) -> list[tuple[str, UnitRecord]]:
        finished: list[tuple[str, UnitRecord]] = []
        if not self.idle and len(self.actors) < self.slots:
            actor = self.pool.borrow()
            self.actors.append(actor)
            self.idle.append(actor)
        while not self.idle:
            finished += self._wait_one()
        actor = self.idle.pop()
        ref = actor.process.remote(self.spec.name, unit, self.config_hash, self.oom_retries)
        self.in_flight[ref] = (unit, actor)
        return finished

    def drain(self) -> list[tuple[str, UnitRecord]]:
        finished: list[tuple[str, UnitRecord]] = []
        while self.in_flight:
            finished += self._wait_one()
        return finished

    def _wait_one(self) -> list[tuple[str, UnitRecord]]:
        ready, _ = self.ray.wait(list(self.in_flight), num_returns=1)
        out = []
        for ref in ready:
            unit, actor = self.in_flight.pop(ref)
            try:
                record = UnitRecord(**self.ray.get(ref))
                self.idle.append(actor)
            except self.ray.exceptions.RayTaskError:
                # Not the unit (its exceptions are records): the stage's processor could not be made (a model that
                # does not load). That stops the run, as it does locally; the exception is of the original type.
                raise
            except self.ray.exceptions.RayError as exc:  # the worker died more often than Ray retries
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                log.error("unit %s: its Ray worker failed: %s", unit, exc)
                record = UnitRecord(unit=unit, status="error", reason=reason, result={"ray": str(exc)[-2000:]},
                                    seconds=0.0, worker="ray", config_hash=self.config_hash)  # fmt: skip
                self.actors.remove(actor)  # the next submit borrows another
                self.pool.drop(actor)
            out.append((unit, record))
        return out

    def close(self) -> None:
        """The stage's models leave memory now; the actors go back to the pool. Units still in flight (an
        interrupted driver) are abandoned: their actors are dropped."""
        busy = [actor for _, actor in self.in_flight.values()]
        for actor in busy:
            self.pool.drop(actor)
        try:
            self.pool.give_back([a for a in self.actors if a not in busy])
        except Exception:  # a driver interrupted mid-stage still frees what it can
            log.warning("could not hand the stage's actors back", exc_info=True)
        self.actors, self.idle, self.in_flight = [], [], {}


class UnitWorker:
    """One concurrent slot (a Ray actor): the processor of the stage it works on, made on that stage's first unit
    and kept until the stage ends (`close`)."""

    def __init__(self, cfg: Config, run_root: str, resources: dict[str, float]) -> None:
        self.cfg, self.run_root = cfg, run_root
        # torch fixes its thread count at first import: tell it through the environment, and directly if imported.
        self.threads = max(1, round(resources.get("num_cpus") or 1))
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[key] = str(self.threads)
        self.stage: str | None = None
        self.processor: ProcessFn | None = None
        self.name = f"{socket.gethostname()}:{os.getpid()}:ray-{uuid.uuid4().hex[:8]}"

    def _set_threads(self) -> None:
        torch = sys.modules.get("torch")
        if torch is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def process(self, stage: str, unit: str, config_hash: str | None, oom_retries: int) -> dict[str, Any]:
        if self.processor is None or self.stage != stage:
            self.close()
            from ttt import memory

            memory.reset_backoff()
            self.processor = rebuild_stage(self.cfg, self.run_root, stage).make_processor()
            self.stage = stage
        self._set_threads()  # at every unit: making the processor may have imported torch
        record = process_unit(self.processor, stage, unit, self.name, config_hash, oom_retries)
        return record.__dict__.copy()

    def close(self) -> None:
        close = getattr(self.processor, "close", None)
        self.processor, self.stage = None, None
        if callable(close):
            close()
        gc.collect()  # the model's tensors go now, and the GPU cache with them
        from ttt import memory

        memory.release_cached_memory()


def rebuild_stage(cfg: Config, run_root: str, stage: str) -> StageSpec:
    """The driver's StageSpec, rebuilt where the actor runs from what pickles plainly."""
    from runners.pipelines import get_pipeline
    from runners.store import RunStore

    for spec in get_pipeline(cfg.pipeline).stages(cfg, RunStore.open(run_root)):
        if spec.name == stage:
            return spec
    raise RuntimeError(f"pipeline {cfg.pipeline} has no stage {stage!r} on this worker")


_ACTOR: Any = None


def _actor_class(ray: Any) -> Any:
    global _ACTOR
    if _ACTOR is None:
        _ACTOR = ray.remote(max_restarts=RETRIES, max_task_retries=RETRIES)(UnitWorker)
    return _ACTOR
