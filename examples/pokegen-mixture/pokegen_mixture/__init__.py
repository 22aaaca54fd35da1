from pokegen_mixture.model import CategoricalMixture, MixtureConfig

__all__ = ["CategoricalMixture", "MixtureConfig"]
