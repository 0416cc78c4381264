"""compact_fused_lm_head: TRL's fused LM head scores only the labelled positions on CPU, with the same loss and gradients."""

from __future__ import annotations

import pytest
import torch
import transformers
from trl.trainer import utils as trl_utils

from retrieval_policies.common.training import compact_fused_lm_head


@pytest.fixture
def restore_trl(monkeypatch):
    # start from TRL's own choice (a recipe's main run in-process may have patched it already); restored afterwards
    monkeypatch.setattr(trl_utils, "_use_triton", getattr(trl_utils._use_triton, "trl_choice", trl_utils._use_triton))


def _fused_model():
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=300,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            pad_token_id=0,
        )
    )
    trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    return model


def _step(model, monkeypatch):
    """Loss, per-token log-probs and gradients of one fused forward and backward, and the rows the LM head projected."""
    torch.manual_seed(1)
    input_ids = torch.randint(1, 300, (2, 12))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :3] = 0  # a left-padded row, as in a batch of prompts of two lengths
    labels = input_ids.clone()
    labels[0, :9] = -100  # a prompt of 9 tokens, then a completion of 3
    labels[1, :10] = -100
    projected = []
    apply = trl_utils._ChunkedLogProbFunction.apply

    def spy(hidden, *args):
        projected.append(hidden.shape[0])
        return apply(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", spy)
    model.zero_grad()
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True)
    out.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", apply)
    return out, grads, projected


def test_compact_scoring_projects_only_labelled_positions_with_the_same_loss_and_gradients(monkeypatch, restore_trl):
    model = _fused_model()
    full, full_grads, full_rows = _step(model, monkeypatch)
    assert full_rows == [2 * 11]  # TRL on CPU: every shifted position of both rows
    compact_fused_lm_head()
    compact, compact_grads, compact_rows = _step(model, monkeypatch)
    assert compact_rows == [3 + 2]  # only the positions whose next token is labelled
    assert torch.equal(compact.label_mask, full.label_mask)
    torch.testing.assert_close(compact.loss, full.loss, rtol=0, atol=1e-6)
    torch.testing.assert_close(compact.log_probs, full.log_probs, rtol=0, atol=1e-6)
    torch.testing.assert_close(compact.entropy, full.entropy, rtol=0, atol=1e-5)
    assert full_grads.keys() == compact_grads.keys()
    for name in full_grads:
        torch.testing.assert_close(compact_grads[name], full_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_compact_fused_lm_head_is_idempotent_and_keeps_other_devices_choice(restore_trl):
    original = trl_utils._use_triton
    compact_fused_lm_head()
    patched = trl_utils._use_triton
    compact_fused_lm_head()
    assert trl_utils._use_triton is patched
    assert patched(torch.device("cpu")) is True
    assert patched(torch.device("meta")) == original(torch.device("meta"))  # not CPU: TRL decides, as before


def test_compact_fused_lm_head_refuses_a_trl_without_the_seam(monkeypatch, restore_trl):
    monkeypatch.delattr(trl_utils, "_use_triton")
    with pytest.raises(RuntimeError, match="_use_triton"):
        compact_fused_lm_head()
