"""What this machine is: the CPU's model and the instruction-set features that decide which
precision runs fast on it. Torch-free, so benchmarks and quick commands can report it cheaply."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pajama import usable_cpus

# /proc/cpuinfo flag -> the name people know it by. bf16 arithmetic is native only with
# AVX512-BF16 or AMX (x86) or the BF16 extension (Arm); without them PyTorch emulates it.
X86_FEATURES = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16", "amx_fp16": "AMX-FP16"}
ARM_FEATURES = {"asimd": "NEON", "sve": "SVE", "bf16": "BF16", "i8mm": "I8MM"}


@dataclass(frozen=True)
class CpuInfo:
    model: str
    features: tuple[str, ...]  # the names in X86_FEATURES / ARM_FEATURES this CPU has
    cores: int  # usable by this process

    @property
    def native_bf16(self) -> bool:
        return any(f in self.features for f in ("AVX512-BF16", "AMX-BF16", "BF16"))

    def describe(self) -> str:
        """One line, e.g. ``AMD EPYC 7B13, 2 cores: AVX2 (no AVX-512, no native bf16)``."""
        known = X86_FEATURES if platform.machine().lower() in ("x86_64", "amd64", "i686") else ARM_FEATURES
        missing = [name for name in known.values() if name not in self.features]
        text = f"{self.model}, {self.cores} core{'s' if self.cores != 1 else ''}: {', '.join(self.features) or 'no vector extensions found'}"
        if missing:
            text += f" (no {', no '.join(missing)})"
        return text


@cache
def cpu_info() -> CpuInfo:
    """The CPU's model name and features, from /proc/cpuinfo (Linux) or sysctl (macOS)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "Hardware") and model in ("", platform.processor(), platform.machine()):
                    model = value.strip()
                elif key in ("flags", "Features"):
                    flags.update(value.split())
    except OSError:
        if platform.system() == "Darwin":
            model = _sysctl("machdep.cpu.brand_string") or model
            flags = {"asimd"} | ({"bf16"} if _sysctl("hw.optional.arm.FEAT_BF16") == "1" else set())
    table = {**X86_FEATURES, **ARM_FEATURES}
    features = tuple(name for flag, name in table.items() if flag in flags)
    return CpuInfo(model=model or "unknown CPU", features=features, cores=usable_cpus())


def _sysctl(name: str) -> str | None:
    try:
        return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def emulated_isa() -> str | None:
    """The instruction-set cap set through the environment (ONEDNN_MAX_CPU_ISA /
    ATEN_CPU_CAPABILITY), which makes a CPU behave like an older one; None when unset."""
    caps = [f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if os.environ.get(k)]
    return " ".join(caps) or None


def available_memory() -> int | None:
    """Bytes of RAM this process can still use: the kernel's MemAvailable, capped by a
    container's (cgroup) limit; None where neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:  # cgroup v2: the limit minus what the group already uses
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int((cgroup / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    if not found and hasattr(os, "sysconf"):
        try:
            found.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)  # macOS: half the RAM
        except (ValueError, OSError):
            pass
    return min(found) if found else None
