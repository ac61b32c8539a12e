"""reproduce.py: the committed docs/RESULTS.md tables are exactly those built from the committed JSON."""
import json
import math

import reproduce


def test_results_md_tables_equal_committed_json():
    found = reproduce.load_results()
    assert ("mlqa-r", "zero-shot", "") in found, "docs/results/mlqa-r__zero-shot.json is missing"
    text = (reproduce.ROOT / "docs" / "RESULTS.md").read_text()
    committed = text.split(reproduce.BEGIN, 1)[1].split(reproduce.END, 1)[0].strip()
    assert committed == reproduce.tables(found).strip()


def test_tables_show_each_json_value():
    res = json.loads((reproduce.RESULTS / "mlqa-r__zero-shot.json").read_text())
    table = reproduce.tables({("mlqa-r", "zero-shot", ""): [res]})
    row = next(l for l in table.splitlines() if l.startswith("| zero-shot (e5-small)"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:5] == [f"{res['map'][s]['mean']:.3f}" for s in ("mono", "cross", "multi")]
    assert cells[5] == f"{res['rank_distance']['mean']:.1f}"


def test_mean_and_spread():
    m, sd = reproduce.mean_sd([0.5, 0.7])
    assert math.isclose(m, 0.6) and math.isclose(sd, math.sqrt(0.02))
    assert reproduce.fmt([0.5, 0.7]) == "0.600 ± 0.141" and reproduce.fmt([0.25]) == "0.250"
