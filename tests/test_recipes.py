"""minihbt/experiments/recipes.py: a run's name and its parse are inverses for every recipe; each
recipe is today's train.py flags (they parse, and differ from the one before in what it says)."""
import pytest

from minihbt.config import TrainConfig, train_args
from minihbt.experiments import recipes


@pytest.mark.parametrize("recipe", list(recipes.RECIPES))
def test_run_names_parse_back(recipe):
    for train in ("xquad-r", "mlqa-r"):
        for sampler in recipes.SAMPLERS:
            name = recipes.run_name(train, sampler, 3, recipe)
            m = recipes.RUN.fullmatch(name)
            assert (m["train"], m["sampler"], m["recipe"] or "old", int(m["seed"])) == (train, sampler, recipe, 3)


def test_each_recipe_is_a_set_of_todays_flags():
    cfgs = {r: TrainConfig(**train_args(["--sampler", "hybrid", *flags])[0]) for r, flags in recipes.RECIPES.items()}
    assert (cfgs["old"].hard_negatives, cfgs["old"].false_negatives, cfgs["old"].val_every) == (0, "keep", 0)
    assert (cfgs["hardneg"].hard_negatives, cfgs["hardneg"].false_negatives) == (1, "keep")
    assert cfgs["masked"].false_negatives == "mask" and cfgs["masked"].val_every == 0
    assert cfgs["paper"] == TrainConfig(sampler="hybrid")  # the paper recipe is train.py's defaults
    assert cfgs["cuda"] == TrainConfig(sampler="hybrid", device="cuda", dtype="fp32")
    assert [r for r in recipes.RECIPES if recipes.selects_on_validation(r)] == ["paper", "batch32", "cuda"]
