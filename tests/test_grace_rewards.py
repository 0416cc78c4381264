"""GRACE's contrastive rewards (method spec §4) on hand-computed 2-group examples, the advantage-invariance property
of the supervised mode, the length penalty, and the 2-process gather against a single process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from retrieval_policies.grace.rewards import RewardWeights, global_rewards, supervised_rewards, unsupervised_rewards

# Two groups of two members in 2-D (unit vectors, so cos is a dot product).
D = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.6, 0.8]])
Q = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # each member carries its group's query
N = torch.tensor([[0.8, 0.6], [0.8, 0.6], [1.0, 0.0], [1.0, 0.0]])
GROUPS = torch.tensor([0, 0, 1, 1])
NOT_TRUNCATED = torch.zeros(4, dtype=torch.bool)


def test_supervised_reward_by_hand():
    rewards, terms = supervised_rewards(D, Q, N, GROUPS, NOT_TRUNCATED, RewardWeights())
    # p = (1, 0, 1, 0.8); nu = (-0.8, -0.8, 0, 0); c = (0, 0, 0.8, 0.8)
    # x_g0 = -max(q0.d2, q0.d3) = -max(0, 0.6) = -0.6;  x_g1 = -max(q1.d0, q1.d1) = -max(0, 1) = -1
    expected = torch.tensor(
        [
            (1 - 0.8 + 0 - 0.2 * 0.6) / 0.1,
            (0 - 0.8 + 0 - 0.2 * 0.6) / 0.1,
            (1 + 0 + 0.2 * 0.8 - 0.2 * 1) / 0.1,
            (0.8 + 0 + 0.2 * 0.8 - 0.2 * 1) / 0.1,
        ]
    )
    torch.testing.assert_close(rewards, expected)
    torch.testing.assert_close(terms["negative_similarity"], torch.tensor([0.8, 0.8, 0.0, 0.0]))
    torch.testing.assert_close(terms["cross"], torch.tensor([-0.6, -0.6, -1.0, -1.0]))


def test_unsupervised_reward_by_hand():
    rewards, terms = unsupervised_rewards(D, Q, GROUPS, NOT_TRUNCATED, RewardWeights())
    # x_i = cos(d_i, q of the other group): (0, 1, 0, 0.6)
    expected = torch.tensor(
        [(1 + 0 - 0) / 0.1, (0 + 0 - 0.2 * 1) / 0.1, (1 + 0.2 * 0.8 - 0) / 0.1, (0.8 + 0.2 * 0.8 - 0.2 * 0.6) / 0.1]
    )
    torch.testing.assert_close(rewards, expected)
    torch.testing.assert_close(terms["cross"], torch.tensor([0.0, 1.0, 0.0, 0.6]))


def test_weights_are_config_fields():
    rewards, _ = supervised_rewards(
        D, Q, N, GROUPS, NOT_TRUNCATED, RewardWeights(tau=1.0, lambda_consistency=0.0, lambda_cross=0.0)
    )
    torch.testing.assert_close(rewards, torch.tensor([1 - 0.8, 0 - 0.8, 1.0, 0.8]))
    with pytest.raises(ValueError, match="tau"):
        RewardWeights(tau=0)


def test_length_penalty_replaces_the_reward():
    truncated = torch.tensor([False, True, False, True])
    for rewards, _ in (
        supervised_rewards(D, Q, N, GROUPS, truncated, RewardWeights()),
        unsupervised_rewards(D, Q, GROUPS, truncated, RewardWeights()),
    ):
        assert rewards[1].item() == -1.0 and rewards[3].item() == -1.0  # not divided by tau, not added
        assert rewards[0].item() > 0


def _unit(*shape):
    return torch.nn.functional.normalize(torch.randn(*shape), dim=-1)


def _advantages(rewards, size):
    grouped = rewards.view(-1, size)
    return (grouped - grouped.mean(dim=1, keepdim=True)).flatten()  # GRACE: group mean, no std scaling


@pytest.mark.parametrize("seed", range(5))
def test_supervised_negative_and_cross_terms_leave_the_advantages_unchanged(seed):
    torch.manual_seed(seed)
    groups, size, dim = 3, 4, 8
    d, labels = _unit(groups * size, dim), torch.arange(groups).repeat_interleave(size)
    q = _unit(groups, dim).repeat_interleave(size, dim=0)
    n = _unit(groups, dim).repeat_interleave(size, dim=0)
    truncated = torch.zeros(groups * size, dtype=torch.bool)
    full, _ = supervised_rewards(d, q, n, labels, truncated, RewardWeights())
    other_negatives, _ = supervised_rewards(
        d, q, _unit(groups, dim).repeat_interleave(size, dim=0), labels, truncated, RewardWeights()
    )
    no_cross, _ = supervised_rewards(d, q, n, labels, truncated, RewardWeights(lambda_cross=0.0))
    torch.testing.assert_close(_advantages(full, size), _advantages(other_negatives, size))
    torch.testing.assert_close(_advantages(full, size), _advantages(no_cross, size))
    assert not torch.allclose(full, other_negatives)  # the rewards themselves do move


GATHER_SCRIPT = r"""
import json, sys
import torch
from accelerate import Accelerator
from retrieval_policies.grace.rewards import RewardWeights, global_rewards

accelerator = Accelerator(cpu=True)
batch = torch.load(sys.argv[1])
size = len(batch["d"]) // accelerator.num_processes
start = accelerator.process_index * size
out = {}
for mode in ("supervised", "unsupervised"):
    local = {k: v[start : start + size] for k, v in batch.items()}
    rewards, terms = global_rewards(mode, local, RewardWeights(), gather=accelerator.gather, process_index=accelerator.process_index)
    out[mode] = {"rewards": accelerator.gather(rewards).tolist(), "cross": accelerator.gather(terms["cross"]).tolist()}
if accelerator.is_main_process:
    json.dump({"processes": accelerator.num_processes, **out}, open(sys.argv[2], "w"))
accelerator.wait_for_everyone()
torch.distributed.destroy_process_group()  # a clean exit: gloo aborts a process that leaves its group open
"""


@pytest.mark.slow
def test_two_process_gather_equals_one_process(tmp_path):
    torch.manual_seed(0)
    groups, size, dim = 3, 4, 6  # 12 members, 6 per process: group 1 is split between the two processes
    batch = {
        "d": _unit(groups * size, dim),
        "q": _unit(groups, dim).repeat_interleave(size, dim=0),
        "n": _unit(groups, dim).repeat_interleave(size, dim=0),
        "groups": torch.arange(groups).repeat_interleave(size),
        "truncated": torch.tensor([False] * 7 + [True] + [False] * 4),
    }
    torch.save(batch, tmp_path / "batch.pt")
    (tmp_path / "gather.py").write_text(GATHER_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(tmp_path / "gather.py"),
            str(tmp_path / "batch.pt"),
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=Path(__file__).parent,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["processes"] == 2
    for mode in ("supervised", "unsupervised"):
        single, terms = global_rewards(mode, batch, RewardWeights())
        torch.testing.assert_close(torch.tensor(out[mode]["rewards"]), single)
        torch.testing.assert_close(torch.tensor(out[mode]["cross"]), terms["cross"])
    # a process alone would have seen other cross-group terms: the gather matters
    alone, _ = global_rewards("supervised", {k: v[:6] for k, v in batch.items()}, RewardWeights())
    assert not torch.allclose(alone, single[:6])


def test_member_contrastive_terms_by_hand():
    """The named deviation contrastive="member": ν_i = −cos(d_i, n_g), x_i = −mean_{h≠g} cos(d_i, q_h)."""
    weights = RewardWeights(contrastive="member")
    rewards, terms = supervised_rewards(D, Q, N, GROUPS, NOT_TRUNCATED, weights)
    # p = (1, 0, 1, 0.8); nu = -(d.n) = (-0.8, -0.6, 0, -0.6); c = (0, 0, 0.8, 0.8); x = -(d.q_other) = (0, -1, 0, -0.6)
    expected = torch.tensor(
        [
            (1 - 0.8 + 0 + 0) / 0.1,
            (0 - 0.6 + 0 - 0.2 * 1) / 0.1,
            (1 + 0 + 0.2 * 0.8 + 0) / 0.1,
            (0.8 - 0.6 + 0.2 * 0.8 - 0.2 * 0.6) / 0.1,
        ]
    )
    torch.testing.assert_close(rewards, expected)
    torch.testing.assert_close(terms["negative_similarity"], torch.tensor([0.8, 0.6, 0.0, 0.6]))
    # unlike the published per-group terms, these move the advantages: a rollout close to its negative loses
    published, _ = supervised_rewards(D, Q, N, GROUPS, NOT_TRUNCATED, RewardWeights())
    assert not torch.allclose(_advantages(rewards, 2), _advantages(published, 2))
    with pytest.raises(ValueError, match="contrastive"):
        RewardWeights(contrastive="rollout")


@pytest.mark.parametrize("mode", ["supervised", "unsupervised"])
def test_excluded_truncated_rollouts_get_zero_advantage_and_leave_the_baseline(mode):
    """truncation="exclude": a truncated rollout gets the mean reward of its group's ended rollouts, so its
    group-mean advantage is 0 and the ended rollouts' advantages are those of the group without it."""
    reward = (
        (lambda t, w: supervised_rewards(D, Q, N, GROUPS, t, w))
        if mode == "supervised"
        else (lambda t, w: unsupervised_rewards(D, Q, GROUPS, t, w))
    )
    raw, _ = reward(NOT_TRUNCATED, RewardWeights())
    one_cut = torch.tensor([False, True, False, False])
    rewards, _ = reward(one_cut, RewardWeights(truncation="exclude"))
    torch.testing.assert_close(rewards, torch.stack([raw[0], raw[0], raw[2], raw[3]]))
    torch.testing.assert_close(
        _advantages(rewards, 2),
        torch.stack([torch.tensor(0.0), torch.tensor(0.0), (raw[2] - raw[3]) / 2, (raw[3] - raw[2]) / 2]),
    )
    penalised, _ = reward(one_cut, RewardWeights())
    assert penalised[1].item() == -1.0 and _advantages(penalised, 2)[0] != 0  # the published −1 decides group 0
    all_cut, _ = reward(torch.tensor([True, True, False, False]), RewardWeights(truncation="exclude"))
    torch.testing.assert_close(all_cut[:2], torch.zeros(2))  # a group with no ended rollout: no signal at all
    with pytest.raises(ValueError, match="truncation"):
        RewardWeights(truncation="mask")
