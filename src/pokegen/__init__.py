"""pokegen: a reproducible, plugin-based pipeline for small generative image models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pokegen")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
