"""Faster inference and training, opt-in: a compiled model (:func:`compile_model`, ``--compile``) and
bf16 autocast on CPUs that compute bf16 natively (:func:`resolve_precision`, ``--precision bf16``).

* **Compiling** (``torch.compile``, inductor's CPU backend: C++ built with the system's
  compiler) turns the model's many small operations into fused kernels. The first call at a
  new input shape compiles (2–4 minutes per shape on one busy core of the 2-core CPU); later
  calls at that shape reuse the compiled code, and inductor's on-disk cache
  (``TORCHINDUCTOR_CACHE_DIR``, :func:`inductor_cache_dir`) lets a *second process* start in
  under a minute. Shapes are
  fixed (``dynamic=False``): a new tile size or batch compiles again, so streaming prediction
  pads a short last batch to the full batch (:func:`edc_lab.predict.tiling.blend_rows`).
  The compiled model computes the same function; its outputs differ from eager by round-off
  (fused kernels sum in another order). Measured in ``benchmarks/RESULTS.md``.
* **bf16 on a CPU**: autocast runs matrix products and convolutions in bfloat16 where the CPU
  has native bf16 instructions (AVX-512 BF16 or AMX, as ``torch.cpu`` reports them). A CPU
  without them would emulate bf16 (slower than fp32), so ``--precision bf16`` is refused there
  with one error naming the CPU. Off by default: see the README for when to use it.

Whose idea: standard PyTorch practice, wired into edc_lab's commands; nothing here is from the paper.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

#: the ``--precision`` choices: ``auto`` = fp32 on a CPU, the GPU's mixed precision on CUDA
#: (:func:`resolve_amp`); ``fp32`` = no autocast; ``bf16`` = bf16 autocast
PRECISIONS = ("auto", "fp32", "bf16")

#: the compiled versions dynamo keeps per code object (its default, 8, is passed by a bench of three
#: models at two sizes in two precisions, and it then runs the rest eager without an error)
RECOMPILE_LIMIT = 64


class AccelerationError(ValueError):
    """An acceleration option this machine cannot honour (no native bf16, no C++ compiler)."""


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's machine name)."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16_features() -> dict[str, bool]:
    """What torch sees of this CPU's bf16 hardware: ``avx512_bf16`` and ``amx`` (AMX tiles)."""
    cpu = torch.cpu
    return {"avx512_bf16": bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()),
            "amx": bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)())}


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), so bf16 autocast can be faster than fp32."""
    return any(cpu_bf16_features().values())


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The training autocast dtype (``--amp``): None on CPU or with ``"off"``; bf16 where the GPU computes
    it natively (Ampere and newer), else fp16 (V100, T4: their bf16 is only emulated, and slow)."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "bf16" or (amp == "auto" and native_bf16(device)):
        return torch.bfloat16
    return torch.float16


def native_bf16(device: torch.device) -> bool:
    """Whether the GPU ``device`` computes bf16 in hardware (compute capability 8.0 or newer)."""
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def resolve_precision(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``--precision`` on ``device`` (None = fp32, no autocast).

    ``auto``: fp32 on a CPU; on CUDA bf16 where the GPU has it, else fp16
    (:func:`resolve_amp`). ``fp32``: None. ``bf16``: bfloat16; on a
    CPU only where :func:`native_cpu_bf16`, else :class:`AccelerationError`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"--precision: expected one of {PRECISIONS}, found {precision!r}")
    device = torch.device(device)
    if precision == "fp32":
        return None
    if precision == "auto":
        return resolve_amp("auto", device)
    if device.type == "cpu" and not native_cpu_bf16():
        raise AccelerationError(
            f"--precision bf16: expected a CPU with native bf16 (AVX-512 BF16 or AMX, as torch.cpu reports), "
            f"found {cpu_name()!r} without either; bf16 would be emulated there and slower than fp32: "
            f"use --precision fp32")
    return torch.bfloat16


def autocast_context(device: torch.device | str, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype`` on ``device``'s type, or a disabled one for None (fp32)."""
    device = torch.device(device)
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def inductor_cache_dir() -> Path:
    """Where inductor keeps compiled code between processes: ``TORCHINDUCTOR_CACHE_DIR``, else torch's
    default (a folder under the system's temporary directory, per user)."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return Path(cache_dir())


def check_compiler(device: torch.device | str) -> None:
    """Refuse ``--compile`` on a CPU when no C++ compiler is on PATH (inductor builds its kernels with one)."""
    if torch.device(device).type != "cpu":
        return
    wanted = os.environ.get("CXX") or "g++"
    if shutil.which(wanted) is None and shutil.which("c++") is None and shutil.which("clang++") is None:
        raise AccelerationError(
            f"--compile: expected a C++ compiler for inductor's CPU kernels ({wanted}, c++ or clang++ on PATH), "
            f"found none; install one (e.g. apt install g++) or leave out --compile")


def compile_model(model: torch.nn.Module, *, inference: bool = False, device: torch.device | str = "cpu",
                  cache_dir: str | Path | None = None) -> torch.nn.Module:
    """``torch.compile(model, dynamic=False)``: compiled at its first call per input shape.

    ``inference=True`` adds inductor's *freezing* (``options={"freezing": True}``): under
    ``torch.no_grad`` the weights are treated as constants, folded and pre-packed for the CPU's
    kernels (measured: it makes bf16 inference faster, fp32 about the same). Such a compiled
    model must not be trained further: compile again after the weights change.

    Dynamo keeps what it compiled for the model's code in the process, so a second wrapper
    of the same model class at the same shapes reuses it, and inductor's disk cache serves
    later processes. ``cache_dir`` sets inductor's on-disk cache (``TORCHINDUCTOR_CACHE_DIR``) for this process;
    without it the environment's or torch's default is used (:func:`inductor_cache_dir`). The
    compiled module shares the model's parameters: save ``model``, not the wrapper. Nothing is
    compiled until the first call.
    """
    check_compiler(device)
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True  # compiled graphs are kept on disk and reused by later processes
    # one compiled version per model, shape and precision is kept per code object (TileOutputs.forward
    # serves every model): dynamo's default of 8 would silently fall back to eager beyond that
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
    return torch.compile(model, dynamic=False, options={"freezing": True} if inference else None)


def original_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a compiled wrapper (``_orig_mod``), or the model itself."""
    return getattr(model, "_orig_mod", model)
