"""The plugin author's own test: pokegen's contract kit, one test per check, run against this plugin."""

from pokegen_mixture import CategoricalMixture

from pokegen.testing import parametrize_with_checks


@parametrize_with_checks(CategoricalMixture, {"components": 3})
def test_the_mixture_keeps_the_pokegen_contract(check) -> None:
    check()
