"""minihbt/per_query.py: each query's ranks stored by question id in the results JSON, and the values
re-derived from them (hand-worked on test_lareqa_eval's toy dataset, whose every rank is known)."""
import json

import numpy as np
import pytest

from minihbt import per_query
from test_lareqa_eval import run


def test_per_query_values_are_the_hand_worked_ranks_and_give_the_aggregates(tmp_path, monkeypatch):
    """The results JSON stores each query's ranks by question id; query_values re-derives every
    query's AP and rank distance (the hand-worked ranks of test_hand_computed_metrics), their means
    are the stored aggregates, and an edited value or a missing block is a ValueError."""
    out = json.loads(json.dumps(run(tmp_path, monkeypatch)))  # as written to and read from disk
    pq = out["per_query"]
    assert pq["qids"] == ["q1", "q2"]  # each id once: de asks q1 and q2 first
    assert pq["questions"] == {"de": "0 1", "en": "0 1", "zh": "0"}
    assert pq["mono"] == {"de": "1 5", "en": "1 2", "zh": "5"}
    assert pq["cross"] == {"de-en": "1 5", "de-zh": "1", "en-de": "2 1", "en-zh": "4", "zh-de": "5", "zh-en": "5"}
    assert pq["multi"] == {"de": "2,3,1 10,5", "en": "4,1,12 1,4", "zh": "15,14,13"}  # answers in de, en, zh order

    v = per_query.query_values(out)
    approx = lambda x: pytest.approx(x, abs=1e-12)  # noqa: E731
    assert v["mono"]["de"].qids == ["q1", "q2"] and list(v["mono"]["de"].values) == approx([1, 1 / 5])
    assert v["cross"]["en-zh"].qids == ["q1"] and list(v["cross"]["en-zh"].values) == approx([1 / 4])
    assert v["cross"]["de-en"].qids == ["q1", "q2"]
    assert list(v["multi"]["en"].values) == approx([(1 + 2 / 4 + 3 / 12) / 3, (1 + 2 / 4) / 2])
    assert v["rank_distance"]["en"].qids == ["q1", "q2"]
    assert list(v["rank_distance"]["en"].values) == [11.0, 3.0]
    assert list(v["rank_distance"]["zh"].values) == [2.0]
    for setting, per in (("mono", "per_lang"), ("cross", "per_pair"), ("multi", "per_lang")):
        for k, qv in v[setting].items():
            assert np.mean(qv.values) == approx(out["map"][setting][per][k])

    edited = json.loads(json.dumps(out))
    edited["per_query"]["cross"]["en-de"] = "2 2"
    with pytest.raises(ValueError, match="cross mAP of en-de"):
        per_query.query_values(edited)
    edited = json.loads(json.dumps(out))
    edited["per_query"]["mono"]["zh"] = "5 1"
    with pytest.raises(ValueError, match="2 ranks for 1 queries"):
        per_query.query_values(edited)
    edited = json.loads(json.dumps(out))
    edited["per_query"]["multi"]["de"] = "2,3,1 10,6"
    with pytest.raises(ValueError, match="multi mAP of de"):
        per_query.query_values(edited)
    del edited["per_query"]
    with pytest.raises(ValueError, match="no per_query values"):
        per_query.query_values(edited)


def test_per_query_values_count_the_queries_left_out_of_rank_distance(tmp_path, monkeypatch):
    """With en and zh only, en's q2 has one relevant sentence: no rank distance, the stored count."""
    out = run(tmp_path, monkeypatch, langs=["en", "zh"])
    v = per_query.query_values(out)
    assert v["rank_distance"]["en"].qids == ["q1"] and v["multi"]["en"].qids == ["q1", "q2"]
    assert out["rank_distance"]["excluded"] == {"en": 1, "zh": 0}
