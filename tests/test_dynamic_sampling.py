"""DAPO's dynamic sampling as pure functions (study/trainers/dynamic_sampling.py), on hand examples."""

import pytest
import torch

from study.trainers.dynamic_sampling import (
    group_rows,
    informative_groups,
    merge_batches,
    refill_prompts,
    select_groups,
)


def test_informative_groups_and_refill_size():
    assert informative_groups([0, 0, 1, 0, 0.5, 0.5], 2) == [False, True, False]
    assert informative_groups([0.25, 0.25 + 1e-9], 2) == [False]  # round-off is not information
    assert refill_prompts(n_selectable=1, n_groups=4) == 4  # twice the 3 missing, capped at a full batch
    assert refill_prompts(n_selectable=3, n_groups=4) == 2
    assert refill_prompts(n_selectable=5, n_groups=4) == 0


def test_select_groups_prefers_informative_then_refinable():
    selectable = [[False, True], [True, False, False]]
    preferred = [[False, True], [True, False, True]]
    assert select_groups(selectable, preferred, 2) == [(0, 1), (1, 0)]
    # cap hit: the rest in draw order, preferred (below the ceiling) first
    assert select_groups(selectable, preferred, 4) == [(0, 1), (1, 0), (1, 2), (0, 0)]
    with pytest.raises(ValueError):
        select_groups(selectable, preferred, 6)
    assert group_rows([(1, 0), (0, 1)], G=2) == [(1, 0), (1, 1), (0, 2), (0, 3)]


def test_merge_batches_repads_and_trims():
    pad = 9
    a = {"prompt_ids": torch.tensor([[pad, 1, 2], [3, 4, 5]]), "prompt_mask": torch.tensor([[0, 1, 1], [1, 1, 1]]),
         "completion_ids": torch.tensor([[6, pad, pad], [7, 8, pad]]),
         "completion_mask": torch.tensor([[1, 0, 0], [1, 1, 0]]), "advantages": torch.tensor([0.5, -0.5]),
         "num_items_in_batch": torch.tensor(3), "names": ["a0", "a1"], "flag": torch.tensor(1.0)}
    b = {"prompt_ids": torch.tensor([[1], [2]]), "prompt_mask": torch.tensor([[1], [1]]),
         "completion_ids": torch.tensor([[5, 5, 5, 5], [6, pad, pad, pad]]),
         "completion_mask": torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]]), "advantages": torch.tensor([1.0, 2.0]),
         "num_items_in_batch": torch.tensor(5), "names": ["b0", "b1"], "flag": torch.tensor(2.0)}
    out = merge_batches([a, b], [(0, 0), (1, 1)], pad)
    # prompts: a0 has 2 real tokens, b1 one -> 2 columns, left-padded; completions: longest real row 1 -> 1 column
    assert out["prompt_ids"].tolist() == [[1, 2], [pad, 2]] and out["prompt_mask"].tolist() == [[1, 1], [0, 1]]
    assert out["completion_ids"].tolist() == [[6], [6]] and out["completion_mask"].tolist() == [[1], [1]]
    assert out["advantages"].tolist() == [0.5, 2.0] and out["names"] == ["a0", "b1"]
    assert out["flag"].item() == 1.0 and "num_items_in_batch" not in out
    out = merge_batches([a, b], [(1, 0), (0, 1)], pad)
    assert out["completion_ids"].tolist() == [[5, 5, 5, 5], [7, 8, pad, pad]]
    assert out["prompt_ids"].tolist() == [[pad, pad, 1], [3, 4, 5]]
