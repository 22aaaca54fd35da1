from pokegen.plugins.pixelrnn.model import PixelRNN, PixelRNNConfig

__all__ = ["PixelRNN", "PixelRNNConfig"]
