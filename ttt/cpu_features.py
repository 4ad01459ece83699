"""Does this CPU have bf16 matrix hardware, and does `dtype: auto` use bf16 on it? Torch-free.

Two kinds of x86 hardware multiply bf16 natively: AMX tiles (Intel Sapphire Rapids and newer; issue 10 measured a
1024x576x1536 matmul at 1.2 TFLOP/s in bf16 on one core against 168 GFLOP/s in fp32, and a SmolLM2 LoRA step 1.75x
faster) and AVX512-BF16 dot products (Intel Cooper Lake, AMD Zen 4 and newer; `bench/cpu_precision.py` on an EPYC
without AMX: that matmul 2.2-2.6x, a LoRA step 1.4-1.6x, batch-8 generation 1.7-1.8x with the fp32 LoRA sums below).

First measured, bf16 lost quality: after a short TTT the held-out loss evaluated in bf16 was 7.2 % above fp32
(target: within 2 %), because a bf16 layer output rounds most of a small LoRA update away. With the LoRA sums kept
in fp32 (`ttt/lora.py::keep_lora_sums_fp32`) it is 1.1 % above fp32 (fp32 seed-to-seed spread 0.3 %) at 1.4-1.6x the
training and 1.7-1.8x the generation speed of fp32, so `auto` means bf16 on both kinds (AMX's speed is the issue's
measurement; its rounding is the same arithmetic). Other CPUs, Arm included, stay fp32 until measured.

`SEAL_CPU_BF16=auto|on|off` overrides the rule (tests force both paths on any machine). It only decides what
`dtype: auto` means on a CPU: an explicit `fp32` or `bf16` in the config always wins.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

BF16_ENV = "SEAL_CPU_BF16"
BF16_MODES = ("auto", "on", "off")
AMX = "amx"
AVX512_BF16 = "avx512_bf16"
# The kinds `auto` turns bf16 on for: those measured faster with the held-out loss within 2 % of fp32
# (bench/cpu_precision.py; README, Performance). Add a kind here only after that measurement.
BF16_KINDS: tuple[str, ...] = (AMX, AVX512_BF16)

_CPUINFO = Path("/proc/cpuinfo")


def parse_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of a /proc/cpuinfo text (x86 `flags`, Arm `Features`), from its first processor."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def bf16_kind(flags: Iterable[str]) -> str | None:
    """ "amx", "avx512_bf16" or None: the best bf16 matrix hardware these flags name."""
    flags = set(flags)
    if {"amx_bf16", "amx_tile"} <= flags:
        return AMX
    if "avx512_bf16" in flags:
        return AVX512_BF16
    return None


def read_cpuinfo() -> str:
    """This machine's /proc/cpuinfo, or "" where there is none (macOS, Windows): no bf16 hardware is assumed."""
    if not sys.platform.startswith("linux"):
        return ""
    try:
        return _CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


@functools.cache
def detected_kind() -> str | None:
    """This machine's bf16 hardware, read once per process (resolve_precision asks at every training call)."""
    return bf16_kind(parse_flags(read_cpuinfo()))


def bf16_mode(env: Mapping[str, str] | None = None) -> str:
    """The override's value ("auto" when unset); anything else is an error naming the variable."""
    env = os.environ if env is None else env
    mode = env.get(BF16_ENV, "").strip().lower() or "auto"
    if mode not in BF16_MODES:
        raise ValueError(f"{BF16_ENV}={env.get(BF16_ENV)!r}: expected one of {', '.join(BF16_MODES)}")
    return mode


def auto_uses_bf16(env: Mapping[str, str] | None = None, cpuinfo: str | None = None) -> bool:
    """True when `dtype: auto` on this CPU means bf16: forced by the override, or detected hardware of a kind that
    measured faster in bf16."""
    mode = bf16_mode(env)
    if mode != "auto":
        return mode == "on"
    kind = detected_kind() if cpuinfo is None else bf16_kind(parse_flags(cpuinfo))
    return kind in BF16_KINDS


def auto_dtype(env: Mapping[str, str] | None = None, cpuinfo: str | None = None) -> str:
    """ "bf16" or "fp32": what `dtype: auto` resolves to on this CPU."""
    return "bf16" if auto_uses_bf16(env, cpuinfo) else "fp32"


def describe(env: Mapping[str, str] | None = None, cpuinfo: str | None = None) -> dict[str, str | None]:
    """For `seal doctor` and the benchmarks: the hardware found, the override, and what `auto` becomes."""
    kind = detected_kind() if cpuinfo is None else bf16_kind(parse_flags(cpuinfo))
    return {"bf16_hardware": kind, BF16_ENV: bf16_mode(env), "auto": auto_dtype(env, cpuinfo)}
