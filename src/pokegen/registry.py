"""Find model plugins through the `pokegen.models` entry-point group.

A plugin that fails to import or breaks the contract is listed with its error; the others
still load. The built-ins are found exactly the same way as a third party's.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from pydantic import BaseModel

from pokegen.errors import ParamsError
from pokegen.plugin import GenerativeModel, Resources

GROUP = "pokegen.models"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    target: str  # "module:Class"
    distribution: str
    version: str
    plugin: type[GenerativeModel] | None
    error: str | None

    @property
    def capabilities(self) -> list[str]:
        return self.plugin.capabilities() if self.plugin else []


def check_plugin_class(plugin: object, name: str) -> type[GenerativeModel]:
    """Check what can be checked without training; raise TypeError naming what is wrong."""
    if not (isinstance(plugin, type) and issubclass(plugin, GenerativeModel)):
        raise TypeError(f"{plugin!r} is not a subclass of pokegen.plugin.GenerativeModel")
    if getattr(plugin, "name", None) != name:
        raise TypeError(
            f"{plugin.__name__}.name is {getattr(plugin, 'name', None)!r}, but it is registered as {name!r}"
        )
    for attribute in ("Config", "Sampling"):
        settings = getattr(plugin, attribute, None)
        if not (isinstance(settings, type) and issubclass(settings, BaseModel)):
            raise TypeError(f"{plugin.__name__}.{attribute} must be a pydantic BaseModel, got {settings!r}")
        if settings.model_config.get("extra") != "forbid":
            raise TypeError(
                f"{plugin.__name__}.{attribute} must forbid unknown keys (model_config = ConfigDict(extra='forbid'))"
            )
        settings()  # every setting needs a default
    shared = set(plugin.Config.model_fields) & set(plugin.Sampling.model_fields)
    if shared:
        raise TypeError(
            f"{plugin.__name__}: {sorted(shared)} are in both Config (what it learns with) and Sampling (how it draws); keep each in one"
        )
    if not isinstance(plugin.resources, Resources):
        raise TypeError(f"{plugin.__name__}.resources must be a pokegen.plugin.Resources")
    if plugin.likelihood not in (None, "exact", "bound"):
        raise TypeError(f"{plugin.__name__}.likelihood must be 'exact', 'bound' or None")
    if (plugin.likelihood is None) == ("log_prob" in plugin.capabilities()):
        raise TypeError(f"{plugin.__name__}: declare likelihood ('exact' or 'bound') exactly when it defines log_prob")
    if "conditional_log_prob" in plugin.capabilities() and plugin.likelihood != "exact":
        raise TypeError(f"{plugin.__name__}: conditional_log_prob needs an exact likelihood (likelihood = 'exact')")
    if ("encode" in plugin.capabilities()) != ("decode" in plugin.capabilities()):
        raise TypeError(f"{plugin.__name__}: define both encode and decode, or neither")
    return plugin


def _load(entry: EntryPoint) -> PluginInfo:
    dist = entry.dist
    distribution, version = (dist.metadata["Name"], dist.version) if dist else ("?", "?")
    try:
        plugin = check_plugin_class(entry.load(), entry.name)
        return PluginInfo(entry.name, entry.value, distribution, version, plugin, None)
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the others
        return PluginInfo(entry.name, entry.value, distribution, version, None, f"{type(exc).__name__}: {exc}")


@functools.cache
def discover() -> tuple[PluginInfo, ...]:
    """Every registered plugin, sorted by name; broken ones carry their error."""
    return tuple(sorted((_load(entry) for entry in entry_points(group=GROUP)), key=lambda info: info.name))


def get_plugin(name: str, key: str = "pipeline.models") -> type[GenerativeModel]:
    """The plugin class registered as ``name``. Raises ParamsError listing the known ones."""
    found = {info.name: info for info in discover()}
    if name not in found:
        known = ", ".join(sorted(info.name for info in found.values() if info.plugin)) or "none"
        raise ParamsError(f"{key}: no model plugin named {name!r} is installed (known: {known}); see `pokegen models`")
    info = found[name]
    if info.plugin is None:
        raise ParamsError(f"{key}: model plugin {name!r} ({info.target}, {info.distribution} {info.version}) is broken: {info.error}")
    return info.plugin


def plugin_info(name: str) -> PluginInfo:
    """Registry entry of ``name``. Raises ParamsError if no entry point registers it."""
    found = {info.name: info for info in discover()}
    if name not in found:
        raise ParamsError(f"model {name!r} is not registered under the entry-point group {GROUP!r}; install its package")
    return found[name]


def registered_names() -> list[str]:
    """Names under the entry-point group, read from package metadata without importing any plugin."""
    return sorted({entry.name for entry in entry_points(group=GROUP)})


def _code_folder(module: str) -> Path | None:
    """The folder (or file) holding a plugin's code: its package, or the module file of a top-level module.

    Finding it imports the parent packages' __init__ only, never the plugin module itself (nor torch)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    if spec.submodule_search_locations:  # the module is a package: the whole package
        return Path(next(iter(spec.submodule_search_locations)))
    if "." in module:  # a module inside a package: the package it belongs to
        return Path(spec.origin).parent
    return Path(spec.origin)


def hash_code(location: Path) -> str:
    """SHA-256 of a source file, or of a package folder's files (names and bytes; compiled caches left out)."""
    digest = hashlib.sha256()
    files = [location] if location.is_file() else sorted(p for p in location.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    for path in files:
        digest.update(f"{path.relative_to(location.parent).as_posix()}\0".encode())
        digest.update(path.read_bytes())
        digest.update(b"\n")
    return digest.hexdigest()


def code_fingerprint(name: str) -> dict[str, str]:
    """What identifies a plugin's code: entry point, distribution, version and a sha256 of its package's files.

    A pip upgrade changes the version, an edit to an editable install changes the hash: either way
    the fingerprint DVC tracks for train@NAME and evaluate@NAME changes. Never imports the plugin.
    Raises ParamsError if no entry point registers ``name``."""
    entry = next((e for e in entry_points(group=GROUP) if e.name == name), None)
    if entry is None:
        raise ParamsError(f"model {name!r} is not registered under the entry-point group {GROUP!r}; install its package")
    distribution, version = (entry.dist.metadata["Name"], entry.dist.version) if entry.dist else ("?", "?")
    try:
        location = _code_folder(entry.module)
    except (ImportError, ValueError) as exc:
        location, problem = None, f"{type(exc).__name__}: {exc}"
    else:
        problem = "module not found"
    code = hash_code(location) if location is not None else f"unavailable ({problem})"
    return {"model": name, "entry_point": entry.value, "distribution": distribution, "version": version, "code_sha256": code}
