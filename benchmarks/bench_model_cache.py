"""How much the fp32 cache of the packaged SmolLM2 saves: GGUF dequantisation vs loading the converted folder.

Prints the ratio (conversion load time / cached load time), both measured in this run on this machine.
Run: .venv/bin/python benchmarks/bench_model_cache.py
"""

from __future__ import annotations

import time

import torch
from report import write_report  # benchmarks/report.py (this folder is sys.path[0])
from transformers import AutoModelForCausalLM

from retrieval_policies.assets import DEFAULT_BASE_MODEL, OFFLINE_MODELS, resolve_model


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    torch.set_num_threads(2)
    spec = OFFLINE_MODELS[DEFAULT_BASE_MODEL]
    gguf = spec.gguf_path()
    folder = resolve_model(DEFAULT_BASE_MODEL, offline=True)
    from_gguf = timed(
        lambda: AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    )
    cached = min(timed(lambda: AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)) for _ in range(3))
    print(f"load from packaged GGUF: {from_gguf:.2f} s")
    print(f"load from fp32 cache:    {cached:.2f} s")
    print(f"speed-up ratio: {from_gguf / cached:.1f}x")
    write_report(
        "model_cache",
        {
            "load_from_gguf_s": round(from_gguf, 2),
            "load_from_cache_s": round(cached, 2),
            "ratio": round(from_gguf / cached, 1),
        },
    )


if __name__ == "__main__":
    main()
