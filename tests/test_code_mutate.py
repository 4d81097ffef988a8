"""Seeded mutations and diffs: source-preserving edits, symmetric one-token swaps, exact patches."""

import pytest

from lpca_envs.code.mutate import (
    Edit,
    apply_diff,
    apply_edits,
    compiles,
    structural_edits,
    token_edits,
    unified_diff,
)

SRC = """def f(xs, n):
    if not xs:
        return 0
    total = 0
    for i in range(len(xs) - 1):  # keep this comment
        if xs[i] < n and xs[i] % 2 == 0:
            total += xs[i] - n
    return max(total, 1)
"""


def test_token_edits_change_exactly_one_token_and_keep_formatting():
    edits = token_edits(SRC)
    assert edits and {e.kind for e in edits} == {"operator", "name", "constant"}
    for e in edits:
        out = apply_edits(SRC, [e])
        assert "# keep this comment" in out
        assert len(out.split()) == len(SRC.split())  # one token replaced by one token


def test_token_swaps_are_symmetric_so_every_bug_can_be_undone():
    for e in token_edits(SRC):
        mutant = apply_edits(SRC, [e])
        if compiles(mutant):
            assert any(apply_edits(mutant, [u]) == SRC for u in token_edits(mutant)), e


def test_structural_edits_cover_the_bug_classes():
    kinds = {e.kind for e in structural_edits(SRC)}
    assert kinds == {"dropped_guard", "negated_condition", "range_bound", "swapped_args", "swapped_operands"}
    dropped = next(e for e in structural_edits(SRC) if e.kind == "dropped_guard")
    assert "if not xs" not in apply_edits(SRC, [dropped]) and compiles(apply_edits(SRC, [dropped]))
    negated = [apply_edits(SRC, [e]) for e in structural_edits(SRC) if e.kind == "negated_condition"]
    assert any("    if xs:\n" in m for m in negated)  # `not` removed without stray parentheses


def test_overlapping_edits_are_refused():
    with pytest.raises(ValueError, match="overlapping"):
        apply_edits("abcdef", [Edit(0, 3, "x", "t"), Edit(2, 4, "y", "t")])


@pytest.mark.parametrize("n_edits", [1, 2])
def test_unified_diff_roundtrip(n_edits):
    edits = [e for e in token_edits(SRC) if compiles(apply_edits(SRC, [e]))]
    chosen = [edits[0], edits[-1]][:n_edits]
    mutant = apply_edits(SRC, chosen)
    diff = unified_diff(mutant, SRC)
    assert diff.startswith("--- current.py\n+++ fixed.py\n@@ ")
    assert apply_diff(mutant, diff) == SRC


def test_apply_diff_refuses_what_does_not_match():
    diff = unified_diff(SRC, SRC.replace("total = 0", "total = 1"))
    assert apply_diff(SRC, diff) is not None
    assert apply_diff(SRC.replace("total = 0", "total = 5"), diff) is None  # context mismatch
    assert apply_diff(SRC, "no diff here") is None
    removal = unified_diff(SRC, SRC.replace("    if not xs:\n        return 0\n", ""))
    assert apply_diff(apply_diff(SRC, removal), unified_diff(apply_diff(SRC, removal), SRC)) == SRC
