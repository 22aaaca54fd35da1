"""Errors users can catch. Every message names the file, key or value and the fix."""


class PokegenError(Exception):
    """Base class of every error pokegen raises on purpose."""


class ParamsError(PokegenError):
    """params.yaml (or a plugin config) is missing, malformed or invalid."""


class DownloadError(PokegenError):
    """A source file could not be fetched from any address, or failed its checksum."""


class DataError(PokegenError):
    """An input file (archive, sprite, course text file, artifact) is unusable."""


class TrainingDiverged(PokegenError):
    """Training produced NaN/inf or collapsed; the last good checkpoint is kept."""


class PluginContractError(PokegenError):
    """A plugin answered something the contract does not allow (named in the message)."""
