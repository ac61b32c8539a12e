"""minihbt/config.py: the command lines are built from the dataclasses, one flag per field, its help
beside its default; what was given is told apart from the defaults (--resume refuses the former)."""
from dataclasses import MISSING, fields

import pytest

from conftest import cli, user_error
from minihbt.config import EvalConfig, RunConfig, TrainConfig, add_flags, eval_args, train_args
from minihbt.io.files import ArgumentParser, UserError


def test_every_field_is_a_flag_with_its_default_in_the_help():
    for cls in (TrainConfig, RunConfig, EvalConfig):
        p = ArgumentParser()
        add_flags(p, cls)
        actions = {a.dest: a for a in p._actions}
        for f in fields(cls):
            a = actions[f.name]
            assert a.help.startswith(f.metadata["help"].replace("%%", "%")[:20]), f.name
            default = f.default if f.default_factory is MISSING else f.default_factory()
            if default is not None and not isinstance(default, bool) and not f.metadata.get("required"):
                shown = ",".join(default) if isinstance(default, list) else default
                assert a.help.endswith(f"({shown})"), f.name  # the default closes the flag's help
    assert actions["progress"].option_strings == ["--quiet"] and actions["progress"].default is True


def test_train_args_returns_only_what_was_given():
    given, run = train_args(["--sampler", "xx", "--lr", "1e-4", "--langs", "de,en", "--save-every", "5"])
    assert given == {"sampler": "xx", "lr": 1e-4, "langs": ["de", "en"]}
    assert run == RunConfig(save_every=5)
    cfg = TrainConfig(**given)
    assert cfg.lr == 1e-4 and cfg.batch_size == 16 and cfg.warmup == 30 and cfg.dtype == "fp32"
    assert TrainConfig(device="cuda").dtype == "bf16"  # bf16 autocast by default on a GPU
    assert train_args([]) == ({}, RunConfig())


def test_eval_args_reads_space_and_comma_separated_languages():
    assert eval_args(["--dataset", "mlqa-r", "--langs", "de,en", "es"]).langs == ["de", "en", "es"]
    cfg = eval_args(["--dataset", "mlqa-r", "--quiet"])
    assert cfg == EvalConfig(dataset="mlqa-r", progress=False)
    with pytest.raises(UserError, match="the following arguments are required: --dataset"):
        eval_args([])


@pytest.mark.parametrize("kw, message", [
    ({"lr": 0}, "--lr: invalid value 0; expected a positive number"),
    ({"warmup": 400}, "--warmup: invalid value 400; expected an integer in [0, --max-steps]"),
    ({"dtype": "fp16"}, "--dtype: invalid value fp16; expected one of fp32, bf16"),
    ({"seed": -1}, "--seed: expected an integer in [0, 2**32), got -1"),
    ({"dtype": "int8"}, "--dtype int8: inference only (eval.py --dtype int8); train in fp32 or bf16"),
])
def test_bad_training_values_are_one_line_errors(kw, message):
    with pytest.raises(UserError) as e:
        TrainConfig(**kw)
    assert str(e.value) == message


def test_bad_values_through_the_command_lines(tmp_path):
    assert user_error("train.py", ["--sampler", "hybrid", "--max-len-query", "2"]) == \
        "--max-len-query: invalid value 2; expected at least 3 tokens"
    assert user_error("eval.py", ["--dataset", "mlqa-r", "--batch-size", "0"]) == \
        "--batch-size must be a positive integer, got 0"
    assert user_error("eval.py", ["--dataset", "mlqa-r", "--out", str(tmp_path)]) == \
        f"--out {tmp_path}: is a directory; expected a JSON file name"
    assert cli("train.py", ["--sampler", "xx", "--save-every", "0"]) == 2
