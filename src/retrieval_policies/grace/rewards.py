"""GRACE's contrastive rewards (method spec §4), as tensor math over one global batch of rollouts.

Every member i of the batch carries its main-rollout embedding d_i, its group's query embedding q_i (the query's
rollout in supervised mode, the second view in unsupervised mode), in supervised mode its group's negative n_i,
its group id and whether it was truncated. All vectors are unit-norm, so cos is a dot product.

Supervised:   r_i = (p_i + ν_g + λc·c_i + λx·x_g) / τ,   p_i = cos(q_g, d_i), ν_g = −cos(q_g, n_g),
              c_i = mean_{k≠i in g} cos(d_i, d_k),  x_g = −mean_{h≠g} max_j cos(q_g, d_{h,j})
Unsupervised: r_i = (p_i + λc·c_i − λx·x_i) / τ,     x_i = mean_{h≠g} cos(d_i, q_h)
A truncated main rollout (length limit, no EOS) gets −1 instead (not divided by τ).

Two named deviations for small budgets (off by default; the paper configs keep the published reward):

- ``truncation="exclude"``: a truncated rollout gets its group's mean reward over the rollouts that ended, so with
  group-mean advantages (``scale_rewards: none``) its advantage is exactly 0 and the others' advantages are those of
  the group without it (a group with no ended rollout gets 0 everywhere). At budgets where most rollouts are cut,
  the −1 penalty otherwise decides every advantage. Pair it with TRL's ``mask_truncated_completions: true`` to take
  their tokens out of the loss's denominator too.
- ``contrastive="member"`` (supervised): the negative and cross-group terms per rollout, ν_i = −cos(d_i, n_g) and
  x_i = −mean_{h≠g} cos(d_i, q_h), instead of the published per-group ν_g and x_g, which are constant within a group
  and cancel in the advantage, so that only p and the consistency term move the policy (and both rise when every
  rationale shrinks toward one direction).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TRUNCATION = ("penalty", "exclude")
CONTRASTIVE = ("group", "member")


def objective_name(contrastive: str = "group", truncation: str = "penalty") -> str:
    """What a GRACE run trained, in words, with its named deviations: for every headline that reports its result
    (the evidence, the model card)."""
    deviations = []
    if contrastive == "member":
        deviations.append(
            "a per-member contrastive reward (contrastive: member, a named deviation; the published per-group reward "
            "collapsed at this scale, docs/experiments/grace.md)"
        )
    if truncation == "exclude":
        deviations.append("truncated rollouts excluded from the advantage (truncation: exclude)")
    return "GRACE GRPO" + (f" with {' and '.join(deviations)}" if deviations else " (the published reward)")


@dataclass
class RewardWeights:
    tau: float = 0.1
    lambda_consistency: float = 0.2
    lambda_cross: float = 0.2
    truncation: str = "penalty"  # published: −1 for a truncated rollout; "exclude": see the module docstring
    contrastive: str = "group"  # published: per-group ν and x (supervised); "member": per rollout

    def __post_init__(self):
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if self.truncation not in TRUNCATION:
            raise ValueError(f"truncation must be one of {list(TRUNCATION)}, got {self.truncation!r}")
        if self.contrastive not in CONTRASTIVE:
            raise ValueError(f"contrastive must be one of {list(CONTRASTIVE)}, got {self.contrastive!r}")


def _truncated_rewards(raw: torch.Tensor, truncated: torch.Tensor, groups: torch.Tensor, how: str) -> torch.Tensor:
    if how == "penalty":
        return torch.where(truncated, torch.full_like(raw, -1.0), raw)
    same = groups[:, None] == groups[None, :]
    ended = same & ~truncated[None, :]
    group_mean = (raw[None, :] * ended).sum(dim=1) / ended.sum(dim=1).clamp(min=1)
    group_mean = torch.where(ended.any(dim=1), group_mean, torch.zeros_like(group_mean))
    return torch.where(truncated, group_mean, raw)


def _consistency(d: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Mean cosine to the siblings (0 for a member without siblings)."""
    siblings = (groups[:, None] == groups[None, :]) & ~torch.eye(len(groups), dtype=torch.bool, device=d.device)
    sums = (d @ d.T * siblings).sum(dim=1)
    return sums / siblings.sum(dim=1).clamp(min=1)


def _group_index(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the distinct group ids, each member's position among them)."""
    unique, position = torch.unique(groups, return_inverse=True)
    return unique, position


def _others(position: torch.Tensor, count: int) -> torch.Tensor:
    """[member, group]: whether the group is not the member's own."""
    return position[:, None] != torch.arange(count, device=position.device)[None, :]


def _similarity_to_other_queries(d: torch.Tensor, q: torch.Tensor, position: torch.Tensor, count: int) -> torch.Tensor:
    """Per member, the mean over the other groups h of cos(d_i, q_h) (every member of a group carries its query)."""
    first = torch.stack([(position == h).nonzero()[0, 0] for h in range(count)])
    others = _others(position, count)
    return ((d @ q[first].T) * others).sum(dim=1) / others.sum(dim=1).clamp(min=1)


def supervised_rewards(
    d, q, n, groups, truncated, weights: RewardWeights
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    positive = (q * d).sum(-1)
    consistency = _consistency(d, groups)
    unique, position = _group_index(groups)
    if weights.contrastive == "member":
        negative = -(d * n).sum(-1)  # this rollout's own similarity to its group's negative
        cross = -_similarity_to_other_queries(d, q, position, len(unique))
    else:
        negative = -(q * n).sum(-1)
        similarity = q @ d.T  # [member i (its group's query), member j (a main rollout)]
        # max over each group's rollouts: [N, number of groups]
        best = torch.stack([similarity[:, position == h].max(dim=1).values for h in range(len(unique))], dim=1)
        others = _others(position, len(unique))
        cross = -(best * others).sum(dim=1) / others.sum(dim=1).clamp(min=1)
    raw = (positive + negative + weights.lambda_consistency * consistency + weights.lambda_cross * cross) / weights.tau
    rewards = _truncated_rewards(raw, truncated, groups, weights.truncation)
    return rewards, {
        "positive_similarity": positive,
        "negative_similarity": -negative,
        "consistency": consistency,
        "cross": cross,
    }


def unsupervised_rewards(
    d, q, groups, truncated, weights: RewardWeights
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    positive = (q * d).sum(-1)
    consistency = _consistency(d, groups)
    unique, position = _group_index(groups)
    cross = _similarity_to_other_queries(d, q, position, len(unique))
    raw = (positive + weights.lambda_consistency * consistency - weights.lambda_cross * cross) / weights.tau
    rewards = _truncated_rewards(raw, truncated, groups, weights.truncation)
    return rewards, {"positive_similarity": positive, "consistency": consistency, "cross": cross}


def global_rewards(
    mode: str, local: dict[str, torch.Tensor], weights: RewardWeights, *, gather=None, process_index: int = 0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Rewards of this process's members, with the cross-group terms over the batch of **all** processes.

    ``local`` holds ``d``, ``q`` (and ``n``), ``groups`` and ``truncated`` for this process's members; ``gather``
    concatenates a tensor across processes in rank order (``accelerator.gather``; None: one process). Every process
    must hold the same number of members (TRL gives each the same per-device batch).
    """
    keys = ("d", "q", "n", "groups", "truncated") if mode == "supervised" else ("d", "q", "groups", "truncated")
    full = {k: gather(local[k]) if gather is not None else local[k] for k in keys}
    if mode == "supervised":
        rewards, terms = supervised_rewards(
            full["d"], full["q"], full["n"], full["groups"], full["truncated"].bool(), weights
        )
    elif mode == "unsupervised":
        rewards, terms = unsupervised_rewards(full["d"], full["q"], full["groups"], full["truncated"].bool(), weights)
    else:
        raise ValueError(f"mode must be 'supervised' or 'unsupervised', got {mode!r}")
    size = len(local["d"])
    start = process_index * size
    return rewards[start : start + size], {k: v[start : start + size] for k, v in terms.items()}
