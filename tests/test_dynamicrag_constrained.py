"""Constrained id-list decoding: the automaton, the logits processor on hand-made vocabularies (multi-token ids,
both separators, N up to 40, the empty answer) and on SmolLM2's tokenizer with a tiny random model, where every
constrained output parses with no repair while the unconstrained outputs do not."""

from __future__ import annotations

import random
import re

import pytest
import torch
from testing_utils import tiny_llama

from retrieval_policies.models.dynamicrag import DynamicRAGConfig, DynamicRAGModel, parse_selection
from retrieval_policies.models.dynamicrag.constrained_dynamicrag import (
    IdListLogitsProcessor,
    IdListState,
    advance,
    id_list_regex,
)


@pytest.mark.parametrize(
    "text, n, complete",
    [
        ("None", 5, True),
        ("[3]", 5, True),
        ("[3], [1], [5]", 5, True),
        ("[3],[1]", 5, True),  # the separator without a space
        ("[12], [40], [7]", 40, True),
        ("[1", 5, False),
        ("[1], ", 5, False),
        ("No", 5, False),
    ],
)
def test_the_automaton_accepts_the_format_and_its_prefixes(text, n, complete):
    state = advance(IdListState(), text, n)
    assert state is not None and state.complete is complete
    if complete:
        assert not parse_selection(text, n).malformed


@pytest.mark.parametrize(
    "text, n",
    [
        ("[6]", 5),  # out of range
        ("[0]", 5),
        ("[01]", 20),  # a leading zero
        ("[2], [2]", 5),  # a repeat
        ("[1] [2]", 5),  # no comma
        ("[1],  [2]", 5),  # two spaces
        (" [1]", 5),  # text before the list
        ("None, [1]", 5),
        ("[1], [2], [3]", 2),
        ("[]", 5),
        ("none", 5),
        ("[1]x", 5),
    ],
)
def test_the_automaton_refuses_what_leaves_the_format(text, n):
    assert advance(IdListState(), text, n) is None


class Vocabulary:
    """A hand-made tokenizer: ``pieces`` are the tokens (ids 0..), then filler words and the end token."""

    def __init__(self, pieces: list[str]):
        self.pieces = [*pieces, "hello", " world", "Sure", "<eos>"]
        self.eos_token_id = len(self.pieces) - 1
        self.all_special_ids = [self.eos_token_id]
        self.name_or_path = f"hand-made-{hash(tuple(pieces))}"

    def __len__(self):
        return len(self.pieces)

    def decode(self, ids, **_):
        return "".join(self.pieces[i] for i in ids if i != self.eos_token_id)


def _decode_constrained(vocab: Vocabulary, ns: list[int], max_new_tokens: int, seed: int) -> list[str]:
    """Random logits through the processor, one token per step (sampled among the allowed ones), as generate does."""
    generator = torch.Generator().manual_seed(seed)
    prompt = torch.zeros(len(ns), 3, dtype=torch.long)
    processor = IdListLogitsProcessor(
        vocab, ns, prompt_length=3, eos_ids=[vocab.eos_token_id], max_new_tokens=max_new_tokens
    )
    ids = prompt
    for _ in range(max_new_tokens):
        scores = processor(ids, torch.randn(len(ns), len(vocab), generator=generator))
        assert torch.isfinite(scores).any(dim=-1).all()  # never a row without an allowed token
        probs = torch.softmax(scores, dim=-1)
        ids = torch.cat([ids, torch.multinomial(probs, 1, generator=generator)], dim=1)
    outputs = []
    for row in ids[:, 3:].tolist():
        end = row.index(vocab.eos_token_id) if vocab.eos_token_id in row else len(row)
        assert all(t == vocab.eos_token_id for t in row[end:])  # after the end, only end tokens
        outputs.append(vocab.decode(row[:end]))
    return outputs


SINGLE = ["[", "]", ",", " ", ", ", "], [", "],", " [", "None", "N", "o", "n", "e", *"0123456789"]
MULTI = [*SINGLE, "12", "40", "[1", "3]", "[40], [", "20"]  # multi-digit and multi-part tokens


@pytest.mark.parametrize("pieces", [SINGLE, MULTI], ids=["single-character digits", "multi-digit tokens"])
@pytest.mark.parametrize("n", [1, 3, 10, 40])
def test_random_logits_through_the_processor_always_give_a_well_formed_list(pieces, n):
    vocab = Vocabulary(pieces)
    outputs = [o for seed in range(4) for o in _decode_constrained(vocab, [n] * 8, 40, seed)]
    for output in outputs:
        parsed = parse_selection(output, n)
        assert not parsed.malformed, (output, parsed.problems)
        assert re.fullmatch(r"None|\[\d+\](, ?\[\d+\])*", output), output
    assert any(o == "None" for o in outputs) or any(o.startswith("[") for o in outputs)


def test_a_short_budget_closes_the_list_instead_of_cutting_it():
    vocab = Vocabulary(SINGLE)
    for max_new_tokens in (6, 7, 9, 12):
        for output in _decode_constrained(vocab, [40] * 16, max_new_tokens, seed=max_new_tokens):
            assert not parse_selection(output, 40).malformed, (max_new_tokens, output)


def test_rows_with_different_pool_sizes_keep_their_own_range():
    vocab = Vocabulary(SINGLE)
    outputs = _decode_constrained(vocab, [2, 9], 30, seed=3)
    assert all(1 <= i <= 2 for i in parse_selection(outputs[0], 2).ids)
    assert not parse_selection(outputs[1], 9).malformed


def test_the_regex_for_vllm_accepts_the_format():
    pattern = re.compile(id_list_regex(12))
    for text in ("None", "[12]", "[3], [1]", "[3],[12], [1]"):
        assert pattern.fullmatch(text), text
    for text in ("[13]", "[0]", "[1] [2]", "none", ""):
        assert not pattern.fullmatch(text), text


def test_constrained_reranking_with_a_random_model_always_parses(tokenizer):
    """A random model writes anything; constrained, every output parses with no repair, in both prompt profiles."""
    rng = random.Random(0)
    pools = [[f"Passage {j} about topic {rng.randint(0, 99)}." for j in range(rng.randint(2, 12))] for _ in range(6)]
    queries = [f"Question {i}?" for i in range(len(pools))]
    for profile in ("project", "published"):
        config = DynamicRAGConfig(rerank_max_new_tokens=24, prompt_profile=profile, max_passages=8)
        model = DynamicRAGModel(tiny_llama(tokenizer).eval(), tokenizer, config)
        free = model.rerank_batch(queries, pools)
        assert sum(r.malformed for r in free) > 0  # the control: unconstrained, the random model breaks the format
        constrained = model.rerank_batch(queries, pools, constrained=True)
        assert sum(r.malformed for r in constrained) == 0, [r.raw for r in constrained]
        for result, pool in zip(constrained, pools):
            assert len(set(result.indices)) == len(result.indices) and all(0 <= i < len(pool) for i in result.indices)
        sampled = model.rerank_batch(queries, pools, constrained=True, temperature=1.0, seed=1)
        assert sum(r.malformed for r in sampled) == 0
    on = DynamicRAGModel(
        tiny_llama(tokenizer).eval(), tokenizer, DynamicRAGConfig(constrained_decoding=True, rerank_max_new_tokens=16)
    )
    assert sum(r.malformed for r in on.rerank_batch(queries, pools)) == 0  # the config's default


# ------------------------------------------------------------------------------------------------ budgets
def test_the_budget_keeps_whole_passages_in_order_until_one_does_not_fit():
    from retrieval_policies.models.dynamicrag.modeling_dynamicrag import cut_to_budget

    tokens = [30, 50, 10, 40]
    assert cut_to_budget(tokens) == 4
    assert cut_to_budget(tokens, max_k=2) == 2
    assert cut_to_budget(tokens, max_context_tokens=80) == 2  # 30 + 50
    assert cut_to_budget(tokens, max_context_tokens=79) == 1  # the 10 after the 50 is not taken out of order
    assert cut_to_budget(tokens, max_context_tokens=29) == 0
    assert cut_to_budget(tokens, max_k=3, max_context_tokens=1000) == 3
    assert cut_to_budget([], max_context_tokens=5) == 0
    with pytest.raises(ValueError, match="budgets must be >= 0"):
        cut_to_budget(tokens, max_k=-1)


def test_passage_tokens_are_what_the_generator_reads(tokenizer):
    from retrieval_policies.models.dynamicrag import format_passages
    from retrieval_policies.models.dynamicrag.modeling_dynamicrag import passage_tokens

    passages = [{"title": "Paris", "text": "Paris is the capital of France."}, "A short one.", "x " * 50]
    counts = passage_tokens(tokenizer, passages)
    for passage, count in zip(passages, counts):
        assert count == len(tokenizer(format_passages([passage]) + "\n", add_special_tokens=False)["input_ids"])
    assert counts[2] > counts[1] > 0


def test_rerank_and_the_pipeline_cut_to_the_budget_and_report_the_tokens(tokenizer):
    from retrieval_policies.models.dynamicrag.modeling_dynamicrag import passage_tokens
    from retrieval_policies.rag import RetrievalPolicyPipeline

    model = DynamicRAGModel(tiny_llama(tokenizer).eval(), tokenizer, DynamicRAGConfig(rerank_max_new_tokens=24))
    pool = [f"Passage number {i} says something about the topic." for i in range(8)]
    free = model.rerank("q?", pool, constrained=True)
    budget = sum(passage_tokens(tokenizer, free.passages[:2])) if len(free.passages) >= 2 else 10
    cut = model.rerank("q?", pool, constrained=True, max_context_tokens=budget)
    assert cut.indices == free.indices[: len(cut.indices)] and cut.context_tokens <= budget
    assert cut.cut == len(free.indices) - len(cut.indices)
    assert model.rerank("q?", pool, constrained=True, max_k=1).indices == free.indices[:1]

    corpus = [{"id": f"p{i}", "title": "", "text": t} for i, t in enumerate(pool)]
    pipe = RetrievalPolicyPipeline("bm25", None, corpus, generator=model, top_k=4, cache_dir=None)
    full, small = pipe.ask("Passage number 3?"), pipe.ask("Passage number 3?", max_context_tokens=25)
    assert len(full.passages) == 4 and full.context_tokens == sum(passage_tokens(tokenizer, full.passages))
    assert small.context_tokens <= 25 and small.passages == full.passages[: len(small.passages)]
    assert small.cut == 4 - len(small.passages)
    assert len(pipe.ask("Passage number 3?", max_k=2).passages) == 2
