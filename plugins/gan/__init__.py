from pokegen.plugins.gan.model import GAN, GANConfig

__all__ = ["GAN", "GANConfig"]
