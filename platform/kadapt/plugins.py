"""The plugin manager: loads built-in and third-party plugins and collects what they register.

Plugins come from the ``kadapt`` entry-point group (built-ins included) and from the import paths in
``KADAPT_PLUGINS``. A plugin whose import fails is reported as disabled, with the reason and an install
hint, instead of stopping start-up. Misspelled hook implementations fail loudly through
``check_pending()``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from kadapt import hookspecs
from kadapt.errors import InvalidInput, KadaptError, PluginError

__all__ = ["PluginInfo", "Plugins", "check_names", "get_plugins", "pick"]

ENTRY_POINT_GROUP = "kadapt"

# hook name -> attribute that names what a contribution is
_CONTRIBUTION_NAME = {
    "register_connectors": "kind",
    "register_augmenters": "name",
    "register_probe_generators": "name",
    "register_judges": "name",
    "register_models": "name",
    "register_policies": "name",
    "register_job_runners": "name",
    "register_job_kinds": "kind",
}


@dataclass
class PluginInfo:
    """One plugin as ``kadapt plugins`` shows it."""

    name: str
    module: str
    source: str  # "entry point" or "KADAPT_PLUGINS" or "registered"
    enabled: bool = True
    reason: str | None = None
    registers: dict[str, list[str]] = field(default_factory=dict)


class Plugins:
    """A plugin manager plus the registry of what its plugins contribute."""

    def __init__(self, *, entry_points: bool = True, modules: Iterable[str] = (), disabled: Iterable[str] = ()):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self._cache: dict[str, dict[str, Any]] = {}
        skip = set(disabled)
        if entry_points:
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                if ep.name in skip:
                    self.info[ep.name] = PluginInfo(
                        ep.name, ep.value, "entry point", False, "disabled by KADAPT_DISABLE_PLUGINS"
                    )
                    continue
                self._load(ep.name, ep.value, "entry point", ep.load, dist=ep.dist)
        for module_name in modules:
            self._load(module_name, module_name, "KADAPT_PLUGINS", lambda m=module_name: importlib.import_module(m))
        self.pm.check_pending()

    def _load(self, name: str, module_name: str, source: str, loader: Callable[[], ModuleType], dist=None) -> None:
        try:
            module = loader()
        except ImportError as exc:
            missing = getattr(exc, "name", None) or str(exc)
            hint = f"pip install {missing}" if missing else "check the plugin's installation"
            if dist is not None and dist.metadata.get("Name") == "kadapt":
                hint = f"pip install {missing!r} (needed by kadapt's built-in {name!r} plugin)"
            self.info[name] = PluginInfo(name, module_name, source, False, f"{exc}; install with: {hint}")
            return
        except Exception as exc:  # a plugin with a bug must not stop kadapt from starting
            self.info[name] = PluginInfo(name, module_name, source, False, f"{type(exc).__name__}: {exc}")
            return
        self.register(module, name=name, source=source)

    def register(self, plugin: object, *, name: str | None = None, source: str = "registered") -> str:
        """Register a plugin object or module (tests use this for throwaway plugins)."""
        registered_name = self.pm.register(plugin, name=name)
        if registered_name is None:
            raise PluginError(f"plugin {name!r} is already registered")
        module = getattr(plugin, "__name__", type(plugin).__name__)
        self.info[registered_name] = PluginInfo(registered_name, module, source)
        self.pm.check_pending()
        self._cache.clear()
        return registered_name

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.info.pop(name, None)
        self._cache.clear()

    def contributions(self, hook_name: str) -> dict[str, Any]:
        """Everything registered through ``hook_name``, keyed by kind/name; duplicates are an error."""
        if hook_name not in self._cache:
            attribute = _CONTRIBUTION_NAME[hook_name]
            found: dict[str, Any] = {}
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                plugin_name = self.pm.get_name(impl.plugin) or "?"

                def register(item: Any, _plugin: str = plugin_name) -> None:
                    key = getattr(item, attribute, None)
                    if not isinstance(key, str) or not key:
                        raise PluginError(f"plugin {_plugin!r} registered {item!r} without a {attribute!r}")
                    if key in found:
                        raise PluginError(
                            f"{attribute} {key!r} is registered twice (second time by plugin {_plugin!r}); "
                            "disable one of the plugins with KADAPT_DISABLE_PLUGINS"
                        )
                    found[key] = item
                    if _plugin in self.info:
                        self.info[_plugin].registers.setdefault(hook_name, []).append(key)

                impl.function(register=register)
            self._cache[hook_name] = found
        return self._cache[hook_name]

    def connectors(self) -> dict[str, type]:
        return self.contributions("register_connectors")

    def job_runners(self) -> dict[str, Any]:
        return self.contributions("register_job_runners")

    def describe(self) -> list[PluginInfo]:
        """All plugins with what each registers (collects every contribution hook first)."""
        for hook_name in _CONTRIBUTION_NAME:
            self.contributions(hook_name)
        return sorted(self.info.values(), key=lambda info: info.name)


@functools.cache
def get_plugins() -> Plugins:
    """The process-wide plugin manager, built on first use from the current settings."""
    from kadapt.settings import get_settings

    settings = get_settings()
    return Plugins(modules=settings.plugins, disabled=settings.disable_plugins)


def _installed(registry: dict[str, Any]) -> str:
    return ", ".join(sorted(registry)) or "none"


def pick(
    registry: dict[str, Any],
    name: str,
    what: str,
    *,
    about: str = "",
    hint: str = "",
    error: type[KadaptError] = InvalidInput,
) -> Any:
    """``registry[name]`` (a hook's contributions), or ``error``: "no {what} {name!r}{about}; installed: a, b{hint}"."""
    if name not in registry:
        raise error(f"no {what} {name!r}{about}; installed: {_installed(registry)}{hint}")
    return registry[name]


def check_names(registry: dict[str, Any], names: Iterable[str], what: str, *, where: str = "") -> None:
    """InvalidInput "unknown {what}(s) a, b{where}; installed: ..." when any of ``names`` is not in ``registry``."""
    unknown = list(dict.fromkeys(name for name in names if name not in registry))
    if unknown:
        raise InvalidInput(f"unknown {what}(s) {', '.join(unknown)}{where}; installed: {_installed(registry)}")
