"""Find the functions of a v2-model app the way the Python worker indexes them, refusing what devhost cannot run."""
from __future__ import annotations

import importlib
import inspect
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func

from devhost.errors import ConfigError

SUPPORTED_TRIGGERS = ("httpTrigger", "queueTrigger", "timerTrigger")
CONTEXT_PARAMETER = "context"
log = logging.getLogger("devhost")


@dataclass(frozen=True)
class FunctionSpec:
    """One function: its name, its trigger binding as function.json holds it, and the Python callable."""

    name: str
    trigger: dict[str, Any]
    handler: Callable[..., Any]
    wants_context: bool

    @property
    def trigger_type(self) -> str:
        return self.trigger["type"]

    @property
    def argument(self) -> str:
        return self.trigger["name"]


def load_functions(module_name: str, root: Path) -> list[FunctionSpec]:
    """Import MODULE_NAME (ROOT first on sys.path) and describe each function of its single FunctionApp."""
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        log.exception("importing %s failed", module_name)
        raise ConfigError(
            f"importing {module_name} raised {type(error).__name__} (traceback above): Azure would load 0 functions; "
            "keep imports light and free of network calls"
        ) from None
    apps = [value for value in vars(module).values() if isinstance(value, func.FunctionRegister)]
    if len(apps) != 1:
        raise ConfigError(
            f"{module_name} must define exactly one func.FunctionApp at module level (found {len(apps)}); "
            "register blueprints on it with app.register_blueprint(bp)"
        )
    return [_describe(function) for function in apps[0].get_functions()]


def _describe(function: func.Function) -> FunctionSpec:
    name = function.get_function_name()
    bindings = json.loads(function.get_function_json())["bindings"]
    triggers = [binding for binding in bindings if binding["type"].endswith("Trigger")]
    if len(triggers) != 1:
        raise ConfigError(f"function {name}: needs exactly one trigger, found {len(triggers)}")
    trigger = triggers[0]
    if trigger["type"] not in SUPPORTED_TRIGGERS:
        raise ConfigError(f"function {name}: devhost runs {', '.join(SUPPORTED_TRIGGERS)}, not {trigger['type']}")
    others = [b["type"] for b in bindings if b is not trigger and not (b["type"] == "http" and b["name"] == "$return")]
    if others:
        raise ConfigError(
            f"function {name}: bindings {', '.join(others)} are not supported by devhost; use the storage SDK in the "
            "function instead (or ask for the binding to be added)"
        )
    handler = function.get_user_function()
    parameters = inspect.signature(handler).parameters
    if trigger["name"] not in parameters:
        raise ConfigError(f"function {name}: the trigger binds {trigger['name']!r} but the function has no such parameter")
    unbound = [p for p in parameters if p not in (trigger["name"], CONTEXT_PARAMETER)
               and parameters[p].default is inspect.Parameter.empty]
    if unbound:
        raise ConfigError(f"function {name}: parameters {', '.join(unbound)} have no binding; remove them or give defaults")
    return FunctionSpec(name, trigger, handler, CONTEXT_PARAMETER in parameters)
