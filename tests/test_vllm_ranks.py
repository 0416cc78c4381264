"""Each rank of a 2-process launch starts its vLLM engines on its own GPU (issue 36, defect 3): vLLM has no device
option and its uni-process executor takes GPU 0, so the engine process is started with the rank's GPU alone visible.
No GPU here: the engines are tests/fakes/vllm, which records the CUDA_VISIBLE_DEVICES each was made under."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from testing_utils import tiny_llama, torchrun_two
from transformers import AutoTokenizer

from retrieval_policies.assets import DEFAULT_BASE_MODEL, resolve_model

pytestmark = pytest.mark.slow

WORKER = textwrap.dedent("""
    import json, os, sys
    import vllm  # tests/fakes/vllm, first on PYTHONPATH
    from retrieval_policies.dynamicrag.judges import make_answer_judge
    from retrieval_policies.dynamicrag.rewards import RewardSettings
    from retrieval_policies.dynamicrag.vllm_backend import VLLMDynamicRAG
    from retrieval_policies.models.grace.modeling_grace import vllm_placement

    rank = int(os.environ["LOCAL_RANK"])
    VLLMDynamicRAG(sys.argv[1], device=f"cuda:{rank}")  # what --device / device_map give under a launch
    make_answer_judge(RewardSettings(weight_bertscore=0, judge_model=sys.argv[1], judge_backend="vllm",
                                     judge_vllm_max_model_length=512,
                                     judge_device_map=f"cuda:{1 - rank}"))  # the judge on the other card
    seen = [options["CUDA_VISIBLE_DEVICES"] for name, options in vllm.CALLS if name == "LLM"]
    print(json.dumps({"rank": rank, "visible": seen, "after": os.environ.get("CUDA_VISIBLE_DEVICES")}), flush=True)
""")


def test_each_rank_places_its_engines_on_its_own_gpu(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_BASE_MODEL, offline=True))
    tiny_llama(tokenizer).save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    (tmp_path / "worker.py").write_text(WORKER)
    fakes = Path(__file__).resolve().parent / "fakes"
    env = {"PYTHONPATH": os.pathsep.join([str(fakes), os.environ.get("PYTHONPATH", "")]), "CUDA_VISIBLE_DEVICES": ""}
    result = torchrun_two(tmp_path / "worker.py", str(tmp_path / "m"), env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    reports = sorted(
        (json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")), key=lambda r: r["rank"]
    )
    # each engine saw its own card alone; the rank's environment is as it was ("": none set) afterwards
    assert reports == [
        {"rank": 0, "visible": ["0", "1"], "after": ""},
        {"rank": 1, "visible": ["1", "0"], "after": ""},
    ]
