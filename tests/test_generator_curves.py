"""benchmarks/generator_curves.py: per-epoch curves read from generator.json rows."""

import pytest

from benchmarks.generator_curves import curves, plot, table


def _row(ndcg, first, ranker=True):
    valid = []
    for n, a in zip(ndcg, first):
        v = {"ndcg@10": n + 0.01, "teacher_forced_accuracy": [a, 0.5, 0.9]}
        if ranker:
            v["retrieval_ndcg@10"] = n  # the generator's own figure, beside the ranker's
        valid.append(v)
    return {"valid": valid, "candidates_per_user": 100.0 if ranker else 0.0}


def test_the_generator_alone_figure_is_read_even_beside_a_ranker():
    joint, tiger = _row([0.01, 0.02], [0.1, 0.12]), _row([0.015, 0.025], [0.11, 0.13], ranker=False)
    assert curves(joint) == ([0.01, 0.02], [0.1, 0.12])
    assert curves(tiger) == ([0.025, 0.035], [0.11, 0.13])  # no ranker: ndcg@10 is the generator's


def test_table_pads_shorter_runs_and_names_missing_ones(tmp_path):
    rows = {"a": _row([0.01, 0.02, 0.03], [0.1, 0.1, 0.1]), "b": _row([0.02], [0.2])}
    text = table(rows, ["a", "b"])
    assert "| `a` N@10 | .0100 | .0200 | .0300 |" in text
    assert "| `b` level-1 acc. | .200 |  |  |" in text
    with pytest.raises(SystemExit, match="'c'"):
        table(rows, ["a", "c"])
    out = tmp_path / "img" / "curves.png"
    plot(rows, ["a", "b"], out)
    assert out.stat().st_size > 1000
