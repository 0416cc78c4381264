"""Does GRACE's supervised reward prefer short rationales for this backbone? (the "find out why" of a run whose
rationales collapsed). For a few triplets, G rationales of the positive at T = 1.0 (the main rollouts) and one of the
query at T = 0.5, as in training; then, per group, the Spearman correlation between a member's rationale length and
its positive similarity p_i (the only per-member term besides consistency), and p without any rationale.

    python recipes/grace/diagnose_length.py --model HuggingFaceTB/SmolLM2-135M-Instruct \
        --dataset_name outputs/data/wordnet-triplets --rows 12 --group-size 8 --max-new-tokens 256
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    for rank, i in enumerate(order):
        ranks[i] = float(rank)
    return ranks


def spearman(x: list[float], y: list[float]) -> float | None:
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    rx, ry = _ranks(x), _ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5


def main() -> None:
    from retrieval_policies.assets import resolve_model
    from retrieval_policies.common.dataset_io import load_split
    from retrieval_policies.models.grace import GraceEmbedder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset_name", required=True)
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="JSON file for the per-group numbers")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    embedder = GraceEmbedder.from_pretrained(resolve_model(args.model))
    rows = list(load_split(args.dataset_name, "triplets", "train").select(range(args.rows)))

    def embed(texts: list[str], temperature: float | None, seed: int) -> tuple[torch.Tensor, list[int], list[bool]]:
        prompts = [embedder.prompt_ids(t) for t in texts]
        if temperature is None:  # no rationale: the prompt alone
            generated = [([], None)] * len(texts)
        else:
            generated = embedder.generate_rationales(
                prompts, texts, max_new_tokens=args.max_new_tokens, temperature=temperature, top_p=1.0, seed=seed
            )
        sequences = [p + ids + ([eos] if eos is not None else []) for p, (ids, eos) in zip(prompts, generated)]
        vectors = embedder.embed_sequences(sequences, [embedder.prefix_length(p) for p in prompts])
        truncated = [temperature is not None and eos is None for _, eos in generated]
        return torch.nn.functional.normalize(vectors, dim=-1), [len(ids) for ids, _ in generated], truncated

    queries, _, _ = embed([r["query"] for r in rows], 0.5, args.seed + 1000)
    bare, _, _ = embed([r["positive"] for r in rows], None, 0)
    members = [embed([r["positive"] for r in rows], 1.0, args.seed + k) for k in range(args.group_size)]
    groups = []
    for g in range(len(rows)):
        lengths = [m[1][g] for m in members]
        truncated = [m[2][g] for m in members]
        p = [float(queries[g] @ m[0][g]) for m in members]
        finished = [i for i in range(args.group_size) if not truncated[i]]
        groups.append(
            {
                "p_without_rationale": float(queries[g] @ bare[g]),
                "p": p,
                "lengths": lengths,
                "truncated": truncated,
                "spearman_length_p_finished": spearman([lengths[i] for i in finished], [p[i] for i in finished]),
            }
        )
    rhos = [g["spearman_length_p_finished"] for g in groups if g["spearman_length_p_finished"] is not None]
    finished_p = [p for g in groups for p, t in zip(g["p"], g["truncated"]) if not t]
    summary = {
        "groups": len(groups),
        "group_size": args.group_size,
        "max_new_tokens": args.max_new_tokens,
        "truncated_share": statistics.fmean(t for g in groups for t in g["truncated"]),
        "mean_rationale_tokens": statistics.fmean(n for g in groups for n in g["lengths"]),
        "mean_p_with_rationale_finished": statistics.fmean(finished_p) if finished_p else None,
        "mean_p_without_rationale": statistics.fmean(g["p_without_rationale"] for g in groups),
        "groups_where_no_rationale_beats_every_member": sum(g["p_without_rationale"] > max(g["p"]) for g in groups),
        "mean_spearman_length_vs_p": statistics.fmean(rhos) if rhos else None,
        "groups_with_negative_spearman": sum(r < 0 for r in rhos),
        "groups_with_spearman": len(rhos),
    }
    for key, value in summary.items():
        print(f"{key:<48} {value:.4f}" if isinstance(value, float) else f"{key:<48} {value}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"summary": summary, "groups": groups}, f, indent=1)


if __name__ == "__main__":
    main()
