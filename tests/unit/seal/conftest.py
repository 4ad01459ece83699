"""The tiny random model fixtures of the inner-loop tests, for the seal tests that run a real model."""

from tests.unit.ttt.conftest import tiny, tiny_cache, tiny_path, tiny_tokenizer  # noqa: F401
