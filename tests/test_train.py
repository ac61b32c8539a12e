"""train.py and minihbt/io/checkpoint.py on a tiny random BERT and a tiny LAReQA directory."""
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import cli, user_error
from minihbt import load_encoder
from minihbt import step as train_step
from minihbt.config import TrainConfig

TINY_BERT = str(Path(__file__).parent / "golden" / "tiny-bert")
LANGS = ["de", "en", "es"]
WORDS = {
    "en": (["red", "green", "blue", "white"], ["cat", "horse", "bird", "fish"], ["Paris", "Rome", "Oslo"]),
    "de": (["rote", "grüne", "blaue", "weiße"], ["Katze", "Pferd", "Vogel", "Fisch"], ["Paris", "Rom", "Oslo"]),
    "es": (["roja", "verde", "azul", "blanca"], ["gata", "caballo", "pájaro", "pez"], ["París", "Roma", "Oslo"]),
}
ASK = {"en": "Where does the {c} {a} live?", "de": "Wo lebt die {c} {a}?", "es": "¿Dónde vive la {a} {c}?"}
SAY = {"en": "The {c} {a} lives in {p}.", "de": "Die {c} {a} lebt in {p}.", "es": "La {a} {c} vive en {p}."}
WHICH = {"en": "Which {a} lives in {p}?", "de": "Welche {a} lebt in {p}?", "es": "¿Qué {a} vive en {p}?"}


def write_lareqa(root: Path, n_paragraphs: int = 4, per_paragraph: int = 3, shared: bool = False) -> Path:
    """A LAReQA-format directory: <lang>.json, one question per sentence, ids shared across languages;
    shared: also a second question "q<k>b" about the first sentence of each paragraph (k = its index),
    so two groups share an answer sentence in every language."""
    root.mkdir(parents=True, exist_ok=True)
    for lang in LANGS:
        colors, animals, places = WORDS[lang]
        paragraphs = []
        for pi in range(n_paragraphs):
            sentences, qas, context = [], [], ""
            for si in range(per_paragraph):
                k = pi * per_paragraph + si
                c, a, p = colors[k % 4], animals[k // 4 % 4], places[k % 3]
                sentence = SAY[lang].format(c=c, a=a, p=p)
                start = len(context) + (1 if context else 0)
                context = (context + " " if context else "") + sentence
                sentences.append((start, start + len(sentence), sentence))
                qas.append({"id": f"q{k:02d}", "question": ASK[lang].format(c=c, a=a),
                            "answers": [{"answer_start": start + 2, "text": sentence[2:6]}]})
                if shared and si == 0:
                    qas.append({"id": f"q{k:02d}b", "question": WHICH[lang].format(a=a, p=p),
                                "answers": [{"answer_start": start + 3, "text": sentence[3:6]}]})
            paragraphs.append({"context": context, "qas": qas, "sentence_breaks": [[s, e] for s, e, _ in sentences],
                               "sentences": [t for _, _, t in sentences]})
        (root / f"{lang}.json").write_text(json.dumps({"data": [{"title": "t", "paragraphs": paragraphs}]},
                                                      ensure_ascii=False))
    return root


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A 32-wide model gains nothing from threads, and on a busy machine they only wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return str(write_lareqa(tmp_path_factory.mktemp("lareqa") / "toy"))


@pytest.fixture(scope="module")
def tiny_bert_no_dropout(tmp_path_factory):
    """tiny-bert without dropout: at hidden size 32, dropout 0.1 drowns what 30 steps can learn
    (transformers' BertModel behaves the same), so the learning test switches it off."""
    path = tmp_path_factory.mktemp("model") / "tiny-bert-no-dropout"
    shutil.copytree(TINY_BERT, path)
    config = json.loads((path / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (path / "config.json").write_text(json.dumps(config))
    return str(path)


def args(data, out, *extra):
    return ["--sampler", "hybrid", "--model", TINY_BERT, "--train-data", data, "--langs", ",".join(LANGS),
            "--batch-size", "4", "--lr", "1e-3", "--seed", "3", "--out", str(out), "--log-every", "100", *extra]


def log_lines(out):
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


def losses(out):
    return [json.loads(line)["loss"] for line in (Path(out) / "log.jsonl").read_text().splitlines()]


def steps(out):
    return [json.loads(line)["step"] for line in (Path(out) / "log.jsonl").read_text().splitlines()]


def test_loss_falls_over_30_steps(data, tmp_path, tiny_bert_no_dropout):
    # X-X: question and answer share words, which a random model can pick up in 30 steps; the toy
    # translations share almost no tokens, so X-Y pairs would need far longer.
    assert cli("train.py", args(data, tmp_path, "--max-steps", "30", "--warmup", "3", "--model", tiny_bert_no_dropout,
                           "--sampler", "xx", "--lr", "3e-3", "--seed", "2")) == 0
    loss = losses(tmp_path)
    assert len(loss) == 30
    first, last = sum(loss[:5]) / 5, sum(loss[-5:]) / 5
    # Falls, and well below log(B), the loss of embeddings that cannot tell the passages apart.
    # (Over seeds 0-4 the ratio last / first was 0.3-0.56 for this tiny-bert.)
    assert last < 0.7 * first and last < 0.7 * math.log(4), loss


class Killed(Exception):
    pass


def kill_at_call(monkeypatch, n, action):
    """Make the n-th loss computation of train.py raise or misbehave (a kill, a NaN)."""
    calls = []
    real = train_step.info_nce

    def patched(*a, **kw):
        calls.append(1)
        if len(calls) == n:
            return action(real(*a, **kw))
        return real(*a, **kw)

    monkeypatch.setattr(train_step, "info_nce", patched)


def test_kill_and_resume_reproduces_uninterrupted_losses(data, tmp_path, monkeypatch):
    full, cut = tmp_path / "full", tmp_path / "cut"
    # Dropout is on in tiny-bert, so equal losses also prove the dropout masks are replayed.
    model = load_encoder(TINY_BERT).model.train()
    ids = torch.tensor([[2, 48, 405, 715, 3]])
    assert not torch.equal(model(ids, torch.ones_like(ids)), model(ids, torch.ones_like(ids)))
    # The paper recipe: 2 hard negatives per example (paragraphs of 3 sentences: some slots stay
    # empty), masking, validation every 3 steps with the best checkpoint kept.
    flags = ["--max-steps", "10", "--save-every", "5", "--hard-negatives", "2", "--val-every", "3"]
    assert cli("train.py", args(data, full, *flags)) == 0

    def kill(_):
        raise Killed

    kill_at_call(monkeypatch, 8, kill)  # dies in step 8, after the step-5 checkpoint
    with pytest.raises(Killed):
        cli("train.py", args(data, cut, *flags))
    monkeypatch.undo()
    assert json.loads((cut / "checkpoint" / "trainer.json").read_text())["step"] == 5
    assert steps(cut) == [1, 2, 3, 4, 5, 6, 7]

    assert cli("train.py", ["--resume", str(cut / "checkpoint"), "--log-every", "100"]) == 0
    assert steps(cut) == list(range(1, 11))
    assert losses(cut) == losses(full)  # exactly: same batches, hard negatives, dropout masks, AdamW moments
    log = log_lines(full)

    def recorded(lines):  # all but the wall time and the run id
        return [{k: v for k, v in line.items() if k not in ("elapsed", "run")} for line in lines]

    assert recorded(log_lines(cut)) == recorded(log)  # hard negatives and validation scores too
    assert [line["step"] for line in log if "val_map_multi" in line] == [3, 6, 9, 10]
    assert 0 < min(line["hard_negatives"] for line in log) < 8  # some slots were empty
    for ckpt in ("checkpoint", "checkpoint-best"):
        a = load_encoder(full / ckpt).model.state_dict()
        b = load_encoder(cut / ckpt).model.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), ckpt


def test_nan_loss_stops_and_keeps_last_checkpoint(data, tmp_path, monkeypatch, capsys):
    kill_at_call(monkeypatch, 7, lambda loss: loss * float("nan"))
    code = cli("train.py", args(data, tmp_path, "--max-steps", "10", "--save-every", "5"))
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: step 7: loss is nan") and "(step 5), intact" in err
    ckpt = tmp_path / "checkpoint"
    assert json.loads((ckpt / "trainer.json").read_text())["step"] == 5
    assert json.loads((ckpt / "minihbt.json").read_text())["provenance"]["step"] == 5
    load_encoder(ckpt)  # still a complete model directory
    assert not list(tmp_path.glob(".checkpoint*")), "a temporary directory was left behind"


def test_checkpoint_provenance_and_config(data, tmp_path):
    assert cli("train.py", args(data, tmp_path, "--max-steps", "2", "--alpha", "0.25")) == 0
    ckpt = tmp_path / "checkpoint"
    prov = json.loads((ckpt / "minihbt.json").read_text())["provenance"]
    assert prov["train_data"] == [data] and prov["langs"] == LANGS and prov["base_model"] == TINY_BERT
    assert prov["step"] == 2 and set(prov["code_version"]) == {"minihbt", "git"}
    state = json.loads((ckpt / "trainer.json").read_text())
    assert state["config"] == {**vars(TrainConfig()), "sampler": "hybrid", "alpha": 0.25, "model": TINY_BERT,
                               "train_data": [data], "langs": LANGS, "batch_size": 4, "lr": 1e-3, "seed": 3,
                               "max_steps": 2, "warmup": 0}
    assert state["provenance"] == prov
    # A HF directory: config.json + weights beside the tokenizer.
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in ckpt.iterdir()}


def test_show_batches_prints_json_lines_and_trains_nothing(data, tmp_path, capsys):
    assert cli("train.py", args(data, tmp_path / "none", "--sampler", "xy", "--show-batches", "4")) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [b["step"] for b in lines] == [1, 2, 3, 4]
    for b in lines:
        assert set(b) == {"step", "kind", "dataset", "pairs", "groups", "false_negatives", "hard_negatives"}
        assert b["kind"] == "cross" and b["dataset"] == data and len(set(b["groups"])) == 4
        assert all(q != p and q in LANGS and p in LANGS for q, p in b["pairs"])
        # One hard negative per example (the default): a sentence [paragraph id, index] of its own
        # paragraph (write_lareqa: question qK answers sentence K % 3 of paragraph 0.{K // 3}), in the
        # passage language, never a batch question's answer; the toy data shares no answers.
        taken = {(l, "0." + str(int(g[1:]) // 3), int(g[1:]) % 3) for g in b["groups"] for l in LANGS}  # answers
        for g, (_, p), [slot] in zip(b["groups"], b["pairs"], b["hard_negatives"]):
            pid = "0." + str(int(g[1:]) // 3)
            if slot is None:  # empty only when every other sentence of the paragraph is taken
                assert all((p, pid, k) in taken for k in range(3))
                continue
            (spid, sent), text = slot
            assert spid == pid and (p, pid, sent) not in taken
            assert text == json.loads((Path(data) / f"{p}.json").read_text())["data"][0]["paragraphs"][
                int(g[1:]) // 3]["sentences"][sent]
            taken.add((p, pid, sent))
        assert b["false_negatives"] == 0
    assert not (tmp_path / "none").exists()


def test_show_batches_after_resume_continues_the_stream(data, tmp_path, capsys):
    assert cli("train.py", args(data, tmp_path, "--show-batches", "6")) == 0
    six = capsys.readouterr().out.splitlines()
    assert cli("train.py", args(data, tmp_path, "--max-steps", "3")) == 0
    capsys.readouterr()
    assert cli("train.py", ["--resume", str(tmp_path / "checkpoint"), "--show-batches", "3"]) == 0
    assert capsys.readouterr().out.splitlines() == six[3:]


def write_groups(path: Path, n: int = 24) -> Path:
    """A JSONL groups file (minihbt/jsonl_groups.py): even groups in en and de, odd ones in en only."""
    ex = lambda lang, i: {"query": f"{lang} question {i}?", "passage": f"{lang} answer {i}."}  # noqa: E731
    path.write_text("".join(json.dumps({"id": f"g{i}", "examples": {"en": ex("en", i)} | (
        {"de": ex("de", i)} if i % 2 == 0 else {})}) + "\n" for i in range(n)))
    return path


def test_jsonl_groups_mix_with_a_lareqa_dataset(data, tmp_path, capsys):
    mine = str(write_groups(tmp_path / "mine.jsonl"))
    assert cli("train.py", args(data, tmp_path / "none", "--train-data", f"{data},{mine}", "--langs", "de,en",
                           "--show-batches", "30", "--val-every", "0")) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {b["dataset"] for b in lines} == {data, mine}  # drawn in proportion to 12 and 24 groups
    for b in lines:
        if b["dataset"] == mine and b["kind"] == "cross":  # X-Y needs two languages: even groups only
            assert all(int(g[1:]) % 2 == 0 for g in b["groups"]) and all(q != p for q, p in b["pairs"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "g1", "examples": {"EN": {"query": "q", "passage": "p"}}}) + "\n")
    code = cli("train.py", args(data, tmp_path / "none", "--train-data", str(bad)))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {bad}:1: examples: unknown language code 'EN'")
    assert err.count("\n") == 1 and not (tmp_path / "none").exists()


@pytest.mark.parametrize("extra, message", [
    (["--sampler", "xz"], "argument --sampler: invalid choice: 'xz'"),
    (["--alpha", "1.5"], "--alpha: expected a probability in [0, 1], got 1.5"),
    (["--langs", "en,vi"], "--langs: vi not in --train-data"),
    # 3 of the 12 groups (one paragraph) are held out for validation, and the message says so
    (["--batch-size", "10", "--sampler", "xx"], "--batch-size 10 is larger than the 9 groups of "),
    (["--batch-size", "13", "--sampler", "xx", "--val-every", "0"], "--batch-size 13 is larger than the 12 groups of "),
    (["--hard-negatives", "-1"], "--hard-negatives: invalid value -1"),
    (["--false-negatives", "drop"], "argument --false-negatives: invalid choice: 'drop'"),
    (["--val-fraction", "1.5"], "--val-fraction: invalid value 1.5"),
    (["--max-steps", "0"], "--max-steps: invalid value 0"),
    (["--train-data", "no-such-dataset"], "--train-data: unknown dataset 'no-such-dataset'"),
])
def test_bad_input_is_one_line(data, tmp_path, capsys, extra, message):
    code = cli("train.py", args(data, tmp_path, *extra))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {message}" or (err.startswith(f"error: {message}") and "\n" not in err), err


def test_unwritable_out_dir(data, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert 0 != cli("train.py", args(data, tmp_path / "file" / "out"))
    assert capsys.readouterr().err.startswith(f"error: --out {tmp_path / 'file' / 'out'}: cannot write there")


def test_resume_refuses_changed_training_flags(data, tmp_path, capsys):
    assert cli("train.py", args(data, tmp_path, "--max-steps", "1")) == 0
    assert 0 != cli("train.py", ["--resume", str(tmp_path / "checkpoint"), "--lr", "1"])
    assert "remove --lr" in capsys.readouterr().err
    assert 0 != cli("train.py", ["--resume", str(tmp_path)])
    assert "not a training checkpoint" in capsys.readouterr().err


def test_point01_fresh_run_refuses_existing_checkpoint(data, tmp_path, monkeypatch, capsys):
    # Run A (X-X, 4 steps) finishes in D; run B (X-Y) into D is refused; with --overwrite, A's
    # checkpoint is gone before B's first step, so B killed at step 3 leaves nothing to resume
    # or evaluate as if it were B's (it used to leave A's checkpoint under B's log lines).
    d = tmp_path / "D"
    assert cli("train.py", args(data, d, "--sampler", "xx", "--max-steps", "4")) == 0
    assert 0 != cli("train.py", args(data, d, "--sampler", "xy", "--max-steps", "10"))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: --out {d}: holds a previous run (checkpoint, ") and err.endswith(
        f"log.jsonl); continue it with --resume {d / 'checkpoint'}, replace it with --overwrite, "
        "or choose another --out")
    assert json.loads((d / "checkpoint" / "trainer.json").read_text())["step"] == 4  # untouched

    def kill(_):
        raise Killed

    kill_at_call(monkeypatch, 3, kill)
    with pytest.raises(Killed):
        cli("train.py", args(data, d, "--sampler", "xy", "--max-steps", "10", "--overwrite"))
    monkeypatch.undo()
    assert not list(d.glob("checkpoint*")) and not list(d.glob(".checkpoint*"))  # the best one too
    assert {l["kind"] for l in log_lines(d)} == {"cross"} and steps(d) == [1, 2]
    assert re.search("not a training checkpoint", user_error("train.py", ["--resume", str(d / "checkpoint")]))


def test_point01_log_lines_carry_the_run_id_that_resume_checks(data, tmp_path, monkeypatch):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    kill_at_call(monkeypatch, 3, lambda _: (_ for _ in ()).throw(Killed))  # dies in step 3
    with pytest.raises(Killed):
        cli("train.py", args(data, a, "--max-steps", "3", "--save-every", "2"))
    monkeypatch.undo()
    assert cli("train.py", args(data, b, "--max-steps", "3")) == 0
    run_a = json.loads((a / "checkpoint" / "trainer.json").read_text())["provenance"]["run_id"]
    run_b = json.loads((b / "checkpoint" / "minihbt.json").read_text())["provenance"]["run_id"]
    assert run_a != run_b and {l["run"] for l in log_lines(a)} == {run_a} and steps(a) == [1, 2]
    # Resuming into an --out whose checkpoint is another run's: refused (the next save would replace it).
    assert re.search(f"is run {run_b}, not the resumed run {run_a}", user_error("train.py", ["--resume", str(a / "checkpoint"), "--out", str(b)]))
    # A log with another run's lines is refused, not trimmed: dropping them would lose that run's
    # record, keeping them would mix two runs in one log.
    shutil.copytree(a / "checkpoint", c / "checkpoint")
    (c / "log.jsonl").write_text((a / "log.jsonl").read_text() + (b / "log.jsonl").read_text())
    assert re.search(f"log.jsonl:3: a line of run {run_b}, but the resumed checkpoint is run {run_a}",
                     user_error("train.py", ["--resume", str(c / "checkpoint")]))
    # The run's own lines after the checkpoint's step, and a line cut short by a kill, are dropped.
    own_later = json.dumps({"step": 3, "run": run_a, "loss": 0.0})
    (a / "log.jsonl").write_text((a / "log.jsonl").read_text() + own_later + '\n{"step": 4, "ru')
    assert cli("train.py", ["--resume", str(a / "checkpoint")]) == 0
    assert steps(a) == [1, 2, 3] and losses(a) == losses(b)  # b: the same run, uninterrupted


@pytest.mark.parametrize("seed", ["-1", str(2**32), str(2**64)])
def test_point04_bad_seed_is_one_line(data, tmp_path, capsys, seed):
    code = cli("train.py", args(data, tmp_path, "--seed", seed))
    assert code == 2
    assert capsys.readouterr().err == f"error: --seed: expected an integer in [0, 2**32), got {seed}\n"


def test_alpha_out_of_range_names_only_alpha(data, tmp_path, capsys):
    """The sampler's refusal of --alpha used to get "; --val-fraction 0.1 of the groups are held
    out for validation" appended, a clause meant for --batch-size against the groups left."""
    code = cli("train.py", args(data, tmp_path, "--alpha", "1.5"))
    assert code == 2
    assert capsys.readouterr().err == "error: --alpha: expected a probability in [0, 1], got 1.5\n"
