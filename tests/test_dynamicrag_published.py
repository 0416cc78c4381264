"""The released checkpoints' inference format (method spec §6), byte for byte, on a Llama-3 tokenizer built here.

The Hub is not reachable, so gasolsun/DynamicRAG-8B cannot be loaded: a tiny tokenizer with Llama-3's chat template
and special tokens, and a random Llama over it, stand in. The expected prompts below are written out by hand from
§6, not produced by the code under test.
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from retrieval_policies.models.dynamicrag import DynamicRAGModel
from retrieval_policies.models.dynamicrag.prompts_dynamicrag import generator_messages, reranker_messages

# Meta-Llama-3-8B-Instruct's chat template
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
SPECIAL = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
]

PASSAGES = [
    {"title": "Hamlet", "text": "Hamlet is a tragedy by William Shakespeare."},
    {"title": "Macbeth", "text": "Macbeth is a play."},
    {"title": "Othello", "text": "Othello was written around 1603."},
]

RERANKER_PROMPT = """<|begin_of_text|><|start_header_id|>system<|end_header_id|>

You are an expert at dynamically generating document identifiers to answer a given query.
I will provide you with a set of documents, each uniquely identified by a number within square brackets, e.g., [1], [2], etc.
Your task is to identify and generate only the identifiers of the documents that contain sufficient information to answer the query.
Stop generating identifiers as soon as the selected documents collectively provide enough information to answer the query.
If no documents are required to answer the query, output "None".
Output the identifiers as a comma-separated list, e.g., [1], [2] or "None" if no documents are needed.
Focus solely on providing the identifiers. Do not include any explanations, descriptions, or additional text.<|eot_id|><|start_header_id|>user<|end_header_id|>

Query: Who wrote Hamlet?
Retrieved Content:
1. Topic: Hamlet
Content: Hamlet is a tragedy by William Shakespeare.
2. Topic: Macbeth
Content: Macbeth is a play.
3. Topic: Othello
Content: Othello was written around 1603.<|eot_id|><|start_header_id|>assistant<|end_header_id|>

"""

GENERATOR_SYSTEM = """You are an intelligent assistant that uses retrieved knowledge to answer user queries accurately and concisely. Follow these rules:
    1. **Task**:
       - Use the provided `[Retrieved Content]` to generate responses.
       - If the Retrieved Content is None, you should generate answer based on your own knowledge.
       - If the information is insufficient or you don't know the answer, state, \u201cI cannot fully answer based on the available information. Please provide more details.\u201d
    2. **Requirements**:
       - **Accuracy**: Base your answers on the retrieved content.
       - **Conciseness**: Keep answers brief and relevant.
       - **Context Awareness**: Ensure your responses align with the user\u2019s query.
    3. **Input Format**:
       - Query: `[User Query]`
       - Retrieved: `[Retrieved Content]`
    4. **Output Format**:
       - A structured, clear response tailored to the query.
    Always prioritize clarity and reliability."""

GENERATOR_PROMPT = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    + GENERATOR_SYSTEM
    + """<|eot_id|><|start_header_id|>user<|end_header_id|>

Please answer the question with a short phrase.

Query: Who wrote Hamlet?

Retrieved Content:
3. Title: Othello.
Content: Othello was written around 1603.
1. Title: Hamlet.
Content: Hamlet is a tragedy by William Shakespeare.<|eot_id|><|start_header_id|>assistant<|end_header_id|>

"""
)


def llama3_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """Byte-level BPE over the 256 bytes, Llama-3's special tokens and chat template."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|end_of_text|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL[2:4] + SPECIAL[5:]})
    tokenizer.chat_template = LLAMA3_TEMPLATE
    return tokenizer


def released_checkpoint(folder, *, context: int) -> None:
    """A folder as an authors' checkpoint looks: a Llama causal LM, its tokenizer, no dynamicrag_config.json."""
    tokenizer = llama3_tokenizer()
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = transformers.LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|end_of_text|>")  # as Llama-3's lists it
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def render(tokenizer, messages) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def test_the_tokenizer_built_here_is_llama3_shaped():
    tokenizer = llama3_tokenizer()
    text = render(tokenizer, reranker_messages("Who wrote Hamlet?", PASSAGES, "published"))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text  # byte-level: the rendering survives tokenization unchanged
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.convert_tokens_to_ids("<|eot_id|>")) == 2


def test_published_profile_renders_the_released_format_byte_for_byte(tmp_path, monkeypatch):
    released_checkpoint(tmp_path / "DynamicRAG-8B", context=8192)
    model = DynamicRAGModel.from_pretrained(tmp_path / "DynamicRAG-8B")
    settings = model.dynamicrag_config  # no dynamicrag_config.json: the released inference settings
    assert (settings.prompt_profile, settings.max_passages, settings.temperature) == ("published", 40, 0.4)
    assert (settings.rerank_max_new_tokens, settings.answer_max_new_tokens) == (100, 200)
    vocab = model.tokenizer.get_vocab()
    assert model.eos_ids() == sorted({vocab["<|end_of_text|>"], vocab["<|eot_id|>"], vocab["<|eom_id|>"]})

    prompts, calls = [], []

    def generate_texts(conversations, *, max_new_tokens, temperature=0.0, seed=None, num_samples=1):
        prompts.extend(render(model.tokenizer, c) for c in conversations)
        calls.append((max_new_tokens, temperature))
        return ["[3], [1]"] * len(conversations) if len(calls) == 1 else ["William Shakespeare"] * len(conversations)

    monkeypatch.setattr(model, "generate_texts", generate_texts)
    out = model("Who wrote Hamlet?", PASSAGES)
    assert prompts[0] == RERANKER_PROMPT
    assert prompts[1] == GENERATOR_PROMPT  # original ids, "Title:", a period after the title, in the reranker's order
    assert calls == [(100, 0.4), (200, 0.0)]
    assert out["indices"] == [2, 0] and out["answer"] == "William Shakespeare"


def test_published_remember_lines_and_empty_selection():
    fever = generator_messages("Paris is in France.", [], task="fever", profile="published")[1]["content"]
    assert fever == (
        "Please answer the question with \u201cSUPPORTS\u201d, \u201cREFUTES\u201d or \u201cNEI\u201d based on what "
        "you know.\n\nQuery: Paris is in France.\n\nRetrieved Content: None"
    )
    eli5 = generator_messages("Why is the sky blue?", [], task="long", profile="published")[1]["content"]
    assert eli5.startswith("Please answer the question with a paragraph.\n\nQuery: ")
    project = generator_messages("Who wrote Hamlet?", PASSAGES[:1])[1][
        "content"
    ]  # the project's own format is unchanged
    assert project == (
        "Please answer the question with a short phrase.\nQuery: Who wrote Hamlet?\n\nRetrieved Content:\n"
        "1. Topic: Hamlet\nContent: Hamlet is a tragedy by William Shakespeare."
    )
    with pytest.raises(ValueError, match="unknown prompt profile"):
        reranker_messages("q", PASSAGES, "paper")


def test_a_4k_checkpoint_sees_20_passages_and_a_repo_setting_wins(tmp_path):
    released_checkpoint(tmp_path / "DynamicRAG-7B", context=4096)
    assert DynamicRAGModel.from_pretrained(tmp_path / "DynamicRAG-7B").dynamicrag_config.max_passages == 20
    (tmp_path / "DynamicRAG-7B" / "dynamicrag_config.json").write_text(json.dumps({"max_passages": 5}))
    repo = DynamicRAGModel.from_pretrained(tmp_path / "DynamicRAG-7B").dynamicrag_config
    assert (repo.prompt_profile, repo.max_passages) == ("project", 5)
    base = DynamicRAGModel.from_base(str(tmp_path / "DynamicRAG-7B"), resolver=str, prompt_profile="published")
    assert base.dynamicrag_config.prompt_profile == "published"
    with pytest.raises(ValueError, match="prompt_profile"):
        DynamicRAGModel.from_base(str(tmp_path / "DynamicRAG-7B"), resolver=str, prompt_profile="paper")
