"""The plugin author's own test: pokegen's contract kit, run against this plugin."""

from pokegen.testing import check_model
from pokegen_mixture import CategoricalMixture


def test_the_mixture_keeps_the_pokegen_contract() -> None:
    ran = check_model(CategoricalMixture, {"components": 3})
    assert {"fit", "sample", "log_prob", "complete", "save/load"} <= set(ran)
