"""``pipeline(model=repo, trust_remote_code=True)`` for a GRACE repo: texts in, embeddings with rationales out.

Copied into every GRACE repo next to its modeling code; the repo's config.json names this class under
``custom_pipelines`` (``modeling_grace.add_auto_map``), so transformers builds it without this project installed.
The pipeline loads the weights as the plain causal LM (``AutoModelForCausalLM``, with the pipeline's ``device``,
``device_map`` and ``dtype``) and wraps them in the repo's GraceEmbedder.
"""

from __future__ import annotations

from transformers import AutoModelForCausalLM, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.utils import cached_file

from .configuration_grace import GRACE_CONFIG_NAME, GraceConfig
from .modeling_grace import PIPELINE_TASK, GraceEmbedder


class GraceFeatureExtractionPipeline(Pipeline):
    """``pipe("a text")`` → ``{"embedding": [...], "rationale": "..."}`` (a list of texts → a list of them); keyword
    arguments: ``rationale`` (False: the prompt alone), ``max_new_tokens``, ``temperature``, ``seed``."""

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        source = self.model.config.name_or_path
        settings = (
            cached_file(source, GRACE_CONFIG_NAME, _raise_exceptions_for_missing_entries=False) if source else None
        )
        grace_config = GraceConfig.load(settings) if settings else GraceConfig()
        self.embedder = GraceEmbedder(
            self.model.eval(),
            self.tokenizer,
            grace_config,
            revision=getattr(self.model.config, "_commit_hash", None),
            source=source,
        )

    def _sanitize_parameters(self, rationale=None, max_new_tokens=None, temperature=None, seed=None, **kwargs):
        if kwargs:
            raise TypeError(
                f"unexpected arguments {sorted(kwargs)} (GRACE takes rationale, max_new_tokens, temperature and seed)"
            )
        options = {"rationale": rationale, "max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed}
        return {}, {k: v for k, v in options.items() if v is not None}, {}

    def preprocess(self, text):
        if not isinstance(text, str):
            raise TypeError(f"a GRACE pipeline embeds strings, got {type(text).__name__}")
        return {"text": text}

    def _forward(self, inputs, **options):
        # with batch_size > 1 the pipeline's collate function hands over {"text": [texts]}; the outputs go back per key
        # (an array of rows, a list of rationales) and the pipeline splits them into one item per text
        texts = inputs["text"]
        batch = texts if isinstance(texts, list) else [texts]
        vectors, rationales = self.embedder.encode(batch, return_rationales=True, show_progress_bar=False, **options)
        if isinstance(texts, list):
            return {"embedding": vectors, "rationale": list(rationales)}
        return {"embedding": vectors[0], "rationale": rationales[0]}

    def postprocess(self, outputs):
        return {"embedding": outputs["embedding"].reshape(-1).tolist(), "rationale": outputs["rationale"]}


PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK, pipeline_class=GraceFeatureExtractionPipeline, pt_model=AutoModelForCausalLM, type="text"
)
