"""minihbt/experiments/downstream_figure.py draws what downstream_report.figure_bars computes (its
numbers are tested in test_downstream_report.py): one panel per task, a PNG that matplotlib wrote."""
import pytest

from minihbt.experiments import downstream_figure


def test_draw_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    bars = {"xnli": [("zero-shot", {"seen": (0.70, 0.01, None), "unseen": (0.60, 0.02, None)}),
                     ("hybrid (xquad-r)", {"seen": (0.72, 0.01, 0.005), "unseen": (0.61, 0.02, 0.004)})],
            "tatoeba": [("zero-shot", {"seen": (0.90, 0.01, None)})]}
    downstream_figure.draw(bars, {"xnli": "XNLI accuracy (probe)", "tatoeba": "Tatoeba accuracy"}, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
