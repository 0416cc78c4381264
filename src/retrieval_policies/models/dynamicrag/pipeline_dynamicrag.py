"""``pipeline(model=repo, trust_remote_code=True)`` for a DynamicRAG repo: a question and passages in, the
selected passages in DynamicRAG's order and the answer written from them out.

Copied into every DynamicRAG repo next to its modeling code; the repo's config.json names this class under
``custom_pipelines`` (``modeling_dynamicrag.add_auto_map``), so transformers builds it without this project
installed. The pipeline loads the weights as the plain causal LM (``AutoModelForCausalLM``, with the pipeline's
``device``, ``device_map`` and ``dtype``) and wraps them in the repo's DynamicRAGModel.
"""

from __future__ import annotations

from transformers import AutoModelForCausalLM, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.utils import cached_file

from .configuration_dynamicrag import DYNAMICRAG_CONFIG_NAME
from .modeling_dynamicrag import PIPELINE_TASK, DynamicRAGModel, checkpoint_settings


class DynamicRAGPipeline(Pipeline):
    """``pipe("question", passages=[...])`` or ``pipe({"question": ..., "passages": [...]})`` (a list of such dicts
    → a list of results) → ``{"answer", "selected": [{"id", "passage"}], "indices"}``: ``id`` is a passage's
    1-based number in the input, ``indices`` the 0-based positions, both in DynamicRAG's order. Passages are strings
    or ``{"title", "text"}`` dicts. Keyword arguments: ``task`` (short / fever / long / arc), ``max_passages``,
    ``temperature``, ``seed``, ``constrained`` (an id list that always parses), ``max_k`` and ``max_context_tokens``
    (a budget: the selection is cut to it, and ``context_tokens`` says what the answer was written from)."""

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        source = self.model.config.name_or_path
        settings = (
            cached_file(source, DYNAMICRAG_CONFIG_NAME, _raise_exceptions_for_missing_entries=False) if source else None
        )
        self.reranker = DynamicRAGModel(
            self.model.eval(),
            self.tokenizer,
            checkpoint_settings(settings, getattr(self.model.config, "max_position_embeddings", None)),
        )

    def __call__(self, inputs, passages=None, **kwargs):
        if passages is not None:
            if not isinstance(inputs, str):
                raise TypeError("with passages=..., the first argument is the question (a string)")
            inputs = {"question": inputs, "passages": passages}
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(
        self,
        task=None,
        max_passages=None,
        temperature=None,
        seed=None,
        constrained=None,
        max_k=None,
        max_context_tokens=None,
        **kwargs,
    ):
        if kwargs:
            raise TypeError(
                f"unexpected arguments {sorted(kwargs)} (DynamicRAG takes task, max_passages, temperature, seed, "
                "constrained, max_k and max_context_tokens)"
            )
        options = {
            "max_passages": max_passages,
            "temperature": temperature,
            "seed": seed,
            "constrained": constrained,
            "max_k": max_k,
            "max_context_tokens": max_context_tokens,
        }
        return {}, {"task": task, **{k: v for k, v in options.items() if v is not None}}, {}

    def preprocess(self, inputs):
        if (
            not isinstance(inputs, dict)
            or not isinstance(inputs.get("question"), str)
            or not isinstance(inputs.get("passages"), list)
        ):
            raise TypeError(
                'a DynamicRAG pipeline takes (question, passages=[...]) or {"question": str, "passages": list}'
            )
        return {"question": inputs["question"], "passages": inputs["passages"]}

    def _forward(self, inputs, task=None, **options):
        # batch_size > 1: the collate function hands over lists of questions and of passage lists; the outputs go back
        # per key (lists) and the pipeline splits them into one item per question
        questions, pools = inputs["question"], inputs["passages"]
        if isinstance(questions, str):
            return {**self.reranker.call_batch([questions], [pools], task=task, **options)[0], "question": questions}
        outs = self.reranker.call_batch(list(questions), list(pools), task=task, **options)
        return {key: [out[key] for out in outs] for key in outs[0]} | {"question": list(questions)}

    def postprocess(self, outputs):
        return {
            "answer": outputs["answer"],
            "indices": outputs["indices"],
            "selected": [{"id": i + 1, "passage": p} for i, p in zip(outputs["indices"], outputs["selected"])],
            "malformed": outputs["malformed"],
            "context_tokens": outputs["context_tokens"],
        }


PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK, pipeline_class=DynamicRAGPipeline, pt_model=AutoModelForCausalLM, type="text"
)
