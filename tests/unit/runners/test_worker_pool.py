"""The loop's worker pool: consecutive stages on one model share it; another model frees it first."""

from __future__ import annotations

from runners.pipelines.seal_loop import WorkerPool


class _Held:
    """Records what the pool does with a loaded worker (the real Worker holds a model; here only the order of
    loads and closes is under test)."""

    def __init__(self, path: str, log: list[str]) -> None:
        self.path, self.log = path, log
        log.append(f"load {path}")

    def close(self) -> None:
        self.log.append(f"close {self.path}")


def test_the_pool_shares_one_model_and_closes_it_before_loading_another() -> None:
    log: list[str] = []
    pool = WorkerPool(lambda path: _Held(path, log))  # type: ignore[arg-type,return-value]
    first = pool.get("base")
    assert pool.get("base") is first
    pool.get("it0.merge/model")
    pool.release()
    pool.release()
    assert log == ["load base", "close base", "load it0.merge/model", "close it0.merge/model"]
