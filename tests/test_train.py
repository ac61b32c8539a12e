"""train.py and minihbt/checkpoint.py on a tiny random BERT and a tiny LAReQA directory."""
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import train
from minihbt import load_encoder, train_step
from minihbt.files import run_cli

TINY_BERT = str(Path(__file__).parent / "golden" / "tiny-bert")
LANGS = ["de", "en", "es"]
WORDS = {
    "en": (["red", "green", "blue", "white"], ["cat", "horse", "bird", "fish"], ["Paris", "Rome", "Oslo"]),
    "de": (["rote", "grüne", "blaue", "weiße"], ["Katze", "Pferd", "Vogel", "Fisch"], ["Paris", "Rom", "Oslo"]),
    "es": (["roja", "verde", "azul", "blanca"], ["gata", "caballo", "pájaro", "pez"], ["París", "Roma", "Oslo"]),
}
ASK = {"en": "Where does the {c} {a} live?", "de": "Wo lebt die {c} {a}?", "es": "¿Dónde vive la {a} {c}?"}
SAY = {"en": "The {c} {a} lives in {p}.", "de": "Die {c} {a} lebt in {p}.", "es": "La {a} {c} vive en {p}."}


def write_lareqa(root: Path, n_paragraphs: int = 4, per_paragraph: int = 3) -> Path:
    """A LAReQA-format directory: <lang>.json, one question per sentence, ids shared across languages."""
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


def losses(out):
    return [json.loads(line)["loss"] for line in (Path(out) / "log.jsonl").read_text().splitlines()]


def steps(out):
    return [json.loads(line)["step"] for line in (Path(out) / "log.jsonl").read_text().splitlines()]


def test_loss_falls_over_30_steps(data, tmp_path, tiny_bert_no_dropout):
    # X-X: question and answer share words, which a random model can pick up in 30 steps; the toy
    # translations share almost no tokens, so X-Y pairs would need far longer.
    assert train.main(args(data, tmp_path, "--max-steps", "30", "--warmup", "3", "--model", tiny_bert_no_dropout,
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
    assert train.main(args(data, full, "--max-steps", "10", "--save-every", "5")) == 0

    def kill(_):
        raise Killed

    kill_at_call(monkeypatch, 8, kill)  # dies in step 8, after the step-5 checkpoint
    with pytest.raises(Killed):
        train.main(args(data, cut, "--max-steps", "10", "--save-every", "5"))
    monkeypatch.undo()
    assert json.loads((cut / "checkpoint" / "trainer.json").read_text())["step"] == 5
    assert steps(cut) == [1, 2, 3, 4, 5, 6, 7]

    assert train.main(["--resume", str(cut / "checkpoint"), "--log-every", "100"]) == 0
    assert steps(cut) == list(range(1, 11))
    assert losses(cut) == losses(full)  # exactly: same batches, dropout masks, AdamW moments
    a = load_encoder(full / "checkpoint").model.state_dict()
    b = load_encoder(cut / "checkpoint").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_stops_and_keeps_last_checkpoint(data, tmp_path, monkeypatch, capsys):
    kill_at_call(monkeypatch, 7, lambda loss: loss * float("nan"))
    with pytest.raises(SystemExit) as e:
        run_cli(train.main, args(data, tmp_path, "--max-steps", "10", "--save-every", "5"))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: step 7: loss is nan") and "(step 5), intact" in err
    ckpt = tmp_path / "checkpoint"
    assert json.loads((ckpt / "trainer.json").read_text())["step"] == 5
    assert json.loads((ckpt / "minihbt.json").read_text())["provenance"]["step"] == 5
    load_encoder(ckpt)  # still a complete model directory
    assert not list(tmp_path.glob(".checkpoint*")), "a temporary directory was left behind"


def test_checkpoint_provenance_and_config(data, tmp_path):
    assert train.main(args(data, tmp_path, "--max-steps", "2", "--alpha", "0.25")) == 0
    ckpt = tmp_path / "checkpoint"
    prov = json.loads((ckpt / "minihbt.json").read_text())["provenance"]
    assert prov["train_data"] == [data] and prov["langs"] == LANGS and prov["base_model"] == TINY_BERT
    assert prov["step"] == 2 and set(prov["code_version"]) == {"minihbt", "git"}
    state = json.loads((ckpt / "trainer.json").read_text())
    assert state["config"] == {**vars(train.TrainConfig()), "sampler": "hybrid", "alpha": 0.25, "model": TINY_BERT,
                               "train_data": [data], "langs": LANGS, "batch_size": 4, "lr": 1e-3, "seed": 3,
                               "max_steps": 2, "warmup": 0}
    assert state["provenance"] == prov
    # A HF directory: config.json + weights beside the tokenizer.
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in ckpt.iterdir()}


def test_show_batches_prints_json_lines_and_trains_nothing(data, tmp_path, capsys):
    assert train.main(args(data, tmp_path / "none", "--sampler", "xy", "--show-batches", "4")) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [b["step"] for b in lines] == [1, 2, 3, 4]
    for b in lines:
        assert set(b) == {"step", "kind", "dataset", "pairs", "groups"}
        assert b["kind"] == "cross" and b["dataset"] == data and len(set(b["groups"])) == 4
        assert all(q != p and q in LANGS and p in LANGS for q, p in b["pairs"])
    assert not (tmp_path / "none").exists()


def test_show_batches_after_resume_continues_the_stream(data, tmp_path, capsys):
    assert train.main(args(data, tmp_path, "--show-batches", "6")) == 0
    six = capsys.readouterr().out.splitlines()
    assert train.main(args(data, tmp_path, "--max-steps", "3")) == 0
    capsys.readouterr()
    assert train.main(["--resume", str(tmp_path / "checkpoint"), "--show-batches", "3"]) == 0
    assert capsys.readouterr().out.splitlines() == six[3:]


@pytest.mark.parametrize("extra, message", [
    (["--sampler", "xz"], "argument --sampler: invalid choice: 'xz'"),
    (["--alpha", "1.5"], "--alpha: expected a probability in [0, 1], got 1.5"),
    (["--langs", "en,vi"], "--langs: vi not in --train-data"),
    (["--batch-size", "13", "--sampler", "xx"], "--batch-size 13 is larger than the 12 groups of "),
    (["--max-steps", "0"], "--max-steps: invalid value 0"),
    (["--train-data", "no-such-dataset"], "--train-data: unknown dataset 'no-such-dataset'"),
])
def test_bad_input_is_one_line(data, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as e:
        run_cli(train.main, args(data, tmp_path, *extra))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {message}" or (err.startswith(f"error: {message}") and "\n" not in err), err


def test_unwritable_out_dir(data, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit):
        run_cli(train.main, args(data, tmp_path / "file" / "out"))
    assert capsys.readouterr().err.startswith(f"error: --out {tmp_path / 'file' / 'out'}: cannot write there")


def test_resume_refuses_changed_training_flags(data, tmp_path, capsys):
    assert train.main(args(data, tmp_path, "--max-steps", "1")) == 0
    with pytest.raises(SystemExit):
        run_cli(train.main, ["--resume", str(tmp_path / "checkpoint"), "--lr", "1"])
    assert "remove --lr" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_cli(train.main, ["--resume", str(tmp_path)])
    assert "not a training checkpoint" in capsys.readouterr().err
