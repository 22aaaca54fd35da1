from pokegen.plugins.vae.model import VAE, VAEConfig

__all__ = ["VAE", "VAEConfig"]
