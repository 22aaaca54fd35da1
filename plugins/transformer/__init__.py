from pokegen.plugins.transformer.model import SpriteTransformer, TransformerConfig

__all__ = ["SpriteTransformer", "TransformerConfig"]
