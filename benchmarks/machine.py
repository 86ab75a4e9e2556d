"""One line naming the machine a benchmark ran on, for the header of its table.

Figures on these 2-core hosts differ by CPU class more than by anything the code changes (an AVX2-only EPYC runs
the detector at half the rate of an AVX-512 one), so a table names the CPU model and the instruction sets that
decide the speed of the inference libraries, not only the architecture.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def speed_sets(flags: set[str]) -> list[str]:
    """The instruction sets (from /proc/cpuinfo's flags) that onnxruntime and OpenVINO choose their kernels by."""
    if "avx512f" in flags:
        extras = [label for flag, label in (("avx512_vnni", "VNNI"), ("avx512_bf16", "BF16")) if flag in flags]
        sets = [f"AVX-512 ({', '.join(extras)})" if extras else "AVX-512"]
        return sets + (["AMX"] if "amx_int8" in flags else [])
    return ["AVX2 only"] if "avx2" in flags else []


def cpu_model(cpuinfo: str | None = None) -> tuple[str, list[str]]:
    """(model name, speed_sets) from /proc/cpuinfo's text; ('', []) without it."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.exists() else ""
    name, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not name:
            name = " ".join(value.split())
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return name, speed_sets(flags)


def describe() -> str:
    """e.g. 'x86_64 Intel(R) Xeon(R) Processor, AVX-512 (VNNI, BF16), AMX, 2 CPUs'."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    name, sets = cpu_model()
    what = " ".join(part for part in (platform.machine(), name) if part)
    return ", ".join([what, *sets, f"{cores} CPUs"])
