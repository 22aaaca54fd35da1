from pokegen.plugins.baselines.model import (
    FrequencyBaseline,
    FrequencyConfig,
    NeighbourBaseline,
    NeighbourConfig,
    PositionBaseline,
)

__all__ = ["FrequencyBaseline", "FrequencyConfig", "NeighbourBaseline", "NeighbourConfig", "PositionBaseline"]
