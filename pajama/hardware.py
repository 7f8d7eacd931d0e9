"""What this machine is: the CPU's model and the instruction-set features that decide which
precision runs fast on it, the memory this process may use, and the device each command runs
on. Torch-free (torch is imported only to resolve a device), so benchmarks and quick commands
can report it cheaply."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pajama import PajamaError, usable_cpus

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


# --accelerator values; gpu is Fabric's name for cuda.
ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")


def device_type(accelerator: str) -> str:
    """The device kind (cpu, cuda or mps) that ``--accelerator`` names, as Fabric picks it for
    auto; an accelerator that is not there is refused rather than run on the CPU instead.
    Every command that runs a model resolves its device here."""
    import torch  # here: this module stays torch-free for the commands that only ask about the CPU

    if accelerator not in ACCELERATORS:
        raise PajamaError(f"--accelerator must be auto, cpu, cuda or mps, got {accelerator!r}")
    if accelerator in ("cuda", "gpu") and not torch.cuda.is_available():
        raise PajamaError(f"--accelerator {accelerator}: no CUDA device is visible to PyTorch (torch {torch.__version__}); use --accelerator cpu or auto")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise PajamaError(f"--accelerator mps: PyTorch (torch {torch.__version__}) finds no Apple GPU (MPS) here; use --accelerator cpu or auto")
    if accelerator in ("cuda", "gpu") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    if accelerator == "mps" or (accelerator == "auto" and torch.backends.mps.is_available()):
        return "mps"
    return "cpu"


CGROUP_ROOT = Path("/sys/fs/cgroup")
# cgroup v1 writes "no limit" as the largest page-aligned 64-bit number.
CGROUP_V1_UNLIMITED = 2**62


def available_memory(cgroup_root: Path = CGROUP_ROOT, own_cgroups: Path = Path("/proc/self/cgroup")) -> int | None:
    """Bytes of RAM this process can still use: the kernel's MemAvailable, capped by the limits
    of its control groups (cgroup v2 or v1, its own group and every group above it) and by a
    SLURM job's memory on this node; None where none of them can be read."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    found += cgroup_headroom(cgroup_root, own_cgroups)
    slurm = slurm_memory()
    if slurm is not None:
        found.append(slurm)
    if not found and hasattr(os, "sysconf"):
        try:
            found.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)  # macOS: half the RAM
        except (ValueError, OSError):
            pass
    return min(found) if found else None


def cgroup_headroom(root: Path = CGROUP_ROOT, own_cgroups: Path = Path("/proc/self/cgroup")) -> list[int]:
    """Limit minus use, in bytes, of each memory-limited control group this process is in (its
    own and those above it, up to ``root``): cgroup v2 (memory.max, memory.current) or v1
    (memory/memory.limit_in_bytes, memory.usage_in_bytes). Reclaimable page cache
    (inactive_file) is not counted as used, as the kernel's MemAvailable does not."""
    v2_path, v1_path = "/", "/"
    try:  # "0::/path" (v2); "N:memory:/path" or "N:...,memory,...:/path" (v1)
        for line in own_cgroups.read_text().splitlines():
            number, controllers, path = line.split(":", 2)
            if number == "0" and not controllers:
                v2_path = path
            elif "memory" in controllers.split(","):
                v1_path = path
    except (OSError, ValueError):
        pass
    hierarchies = [(root, v2_path, "memory.max", "memory.current", "inactive_file"),
                   (root / "memory", v1_path, "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")]  # fmt: skip
    headroom = []
    for top, own, limit_file, usage_file, cache_key in hierarchies:
        group = top / own.lstrip("/")
        for directory in [d for d in (group, *group.parents) if d == top or top in d.parents]:
            try:
                limit = (directory / limit_file).read_text().strip()
                if limit == "max" or int(limit) >= CGROUP_V1_UNLIMITED:
                    continue
                used = int((directory / usage_file).read_text())
            except (OSError, ValueError):
                continue
            headroom.append(int(limit) - used + _stat(directory / "memory.stat", cache_key))
    return headroom


def _stat(path: Path, key: str) -> int:
    """One counter of a cgroup's memory.stat (0 where it cannot be read)."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def slurm_memory() -> int | None:
    """Bytes of memory the SLURM job may use on this node: ``--mem`` (SLURM_MEM_PER_NODE), or
    ``--mem-per-cpu`` (SLURM_MEM_PER_CPU) times the job's CPUs on this node (SLURM_CPUS_ON_NODE,
    else SLURM_CPUS_PER_TASK times the node's tasks); both in MB. None outside such a job (or
    with --mem=0, all of the node's memory)."""
    def number(name: str) -> int | None:
        text = os.environ.get(name, "").strip()
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            raise PajamaError(f"environment variable {name}={text!r}: expected a whole number (SLURM sets it in MB, or a count)") from None

    per_node = number("SLURM_MEM_PER_NODE")
    if per_node:
        return per_node * 2**20
    per_cpu = number("SLURM_MEM_PER_CPU")
    if not per_cpu:
        return None
    cpus = number("SLURM_CPUS_ON_NODE") or (number("SLURM_CPUS_PER_TASK") or 1) * (number("SLURM_NTASKS_PER_NODE") or 1)
    return per_cpu * cpus * 2**20
