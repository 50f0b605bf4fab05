from study.filter import improvement_ratio, keep_improved, needs_refinement


def test_keep_improved_keeps_exactly_the_improved_pairs():
    r = [-1.0, -0.3, 1.0, 0.2, -0.6]
    r_ref = [1.0, -0.3, None, -0.6, -0.3]
    assert keep_improved(r, r_ref) == [True, False, False, False, True]


def test_filter_off_keeps_every_refinement_that_exists():
    assert keep_improved([0.0, 1.0, 0.5], [None, -1.0, 0.5], enabled=False) == [False, True, True]


def test_improvement_ratio_counts_unrefined_as_not_improved():
    assert improvement_ratio([0, 0, 1, 1], [1, 0, None, None]) == 0.25
    assert improvement_ratio([], []) == 0.0


def test_needs_refinement_skips_max_reward():
    assert needs_refinement([1.0, 0.3, -1.0], 1.0) == [False, True, True]
    assert needs_refinement([1.0, 5.0], None) == [True, True]


def test_float32_round_off_is_a_tie_not_an_improvement():
    import torch

    r = torch.tensor([0.35, 1.0], dtype=torch.float32).tolist()  # 0.3499999940395355, as rollouts carry it
    assert keep_improved(r, [-0.3 + 1.3 * 0.5, 1.0]) == [False, False]
    assert needs_refinement(r, 1.0) == [True, False]
