"""What machine a benchmark ran on (printed at the top of every bench script)."""

from __future__ import annotations

import os
import platform


def describe() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    # The kernels torch picks (AVX2 or AVX-512 here) change both speed and round-off.
    capability = torch.backends.cpu.get_cpu_capability()
    return (f"{platform.node()}: {os.cpu_count()} cores ({cpu}, torch CPU capability {capability}), "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, {gpu}")
