"""``make demo``: the main job end to end, offline, on the embedded default model.

Until the training issues land this is the foundation's round trip: prepare the offline assets, start the local
Hub on a free loopback port, push the base model to it in one commit, and load it back through the Hub in a fresh
process with the unmodified clients, which then answers a question. Each client step runs in its own process
because the Hugging Face clients read ``HF_ENDPOINT`` when they are imported.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from .assets import model_source, resolve_model
from .hub import LocalHub, hub_client_env

logger = logging.getLogger(__name__)
DEMO_QUESTION = "What is the capital of France?"


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _run_child(step: str, env: dict, *args: str) -> dict:
    """Run ``python -m retrieval_policies.demo <step> ...`` against the local Hub; its last stdout line is JSON."""
    result = subprocess.run([sys.executable, "-m", __name__, step, *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"demo step {step!r} failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_demo(output_dir: str | Path, *, model: str) -> int:
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()

    _step(f"1. assets: resolve {model}")
    folder = resolve_model(model)
    print(f"{model} -> {folder} (source: {model_source(folder)['source']})")

    _step("2. local Hub on a free loopback port")
    with LocalHub(output_dir / "hub") as hub:
        print(f"local Hub at {hub.url}, repos under {hub.root}")
        env = hub_client_env(hub.url, output_dir / "hf_home")
        repo_id = f"demo/{Path(model.rstrip('/')).name}"

        _step(f"3. push {folder.name} to {repo_id} (one commit)")
        pushed = _run_child("push", env, str(folder), repo_id)
        print(f"commit {pushed['commit']} ({pushed['files']} files, {pushed['bytes'] / 1e6:.0f} MB) -> {pushed['url']}")

        _step(f"4. load {repo_id} back through the Hub in a fresh process and ask it a question")
        env = hub_client_env(hub.url, output_dir / "hf_home_reader")
        loaded = _run_child("load", env, repo_id)
        print(f"loaded {loaded['class']} at commit {loaded['commit']}")
        print(f"Q: {DEMO_QUESTION}\nA: {loaded['answer']}")
        if loaded["commit"] != pushed["commit"]:
            raise RuntimeError(f"loaded commit {loaded['commit']} is not the pushed commit {pushed['commit']}")

    summary = {"model": model, "repo_id": repo_id, "commit": pushed["commit"], "answer": loaded["answer"],
               "seconds": round(time.time() - started, 1)}
    (output_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\ndemo finished in {summary['seconds']} s; summary in {output_dir / 'demo_summary.json'}")
    return 0


# ----------------------------------------------------------------- child processes (clients pointed at the local Hub)
def _child_push(folder: str, repo_id: str) -> dict:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=f"Upload {Path(folder).name}")
    files = [p for p in Path(folder).rglob("*") if p.is_file()]
    return {"commit": info.oid, "url": info.commit_url, "files": len(files), "bytes": sum(p.stat().st_size for p in files)}


def _child_load(repo_id: str) -> dict:
    import torch
    from huggingface_hub import HfApi
    from transformers import AutoModelForCausalLM, AutoTokenizer

    commit = HfApi().model_info(repo_id).sha
    tokenizer = AutoTokenizer.from_pretrained(repo_id, revision=commit)
    model = AutoModelForCausalLM.from_pretrained(repo_id, revision=commit, dtype=torch.float32)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": DEMO_QUESTION}], add_generation_prompt=True, tokenize=False)
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=32, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    return {"class": type(model).__name__, "commit": commit, "answer": answer}


if __name__ == "__main__":
    step, *rest = sys.argv[1:]
    print(json.dumps({"push": _child_push, "load": _child_load}[step](*rest)))
