"""The plugin registry: discovery, explicit registration, validation and lookups."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from typing import Any

import bpmnlite_script
import pytest

from bpmnlite import plugins
from bpmnlite.hookspecs import hookimpl
from bpmnlite.plugins import PluginError, PluginRegistry


class Runner:
    """A script language that records what it ran."""

    def run(self, script: str, variables: Any, *, trusted: bool, element_id: str) -> Mapping[str, Any]:
        return {"ran": script}


def handler(ctx: Any) -> None:
    return None


class TaskTypes:
    @hookimpl
    def bpmnlite_task_types(self) -> Mapping[str, Any]:
        return {"test-http": handler, "test-mail": handler}


class OtherHttp:
    @hookimpl
    def bpmnlite_task_types(self) -> Mapping[str, Any]:
        return {"test-http": handler}


class Groovy:
    @hookimpl
    def bpmnlite_script_languages(self) -> Mapping[str, Any]:
        return {"Groovy": Runner()}


class Listener:
    def __init__(self) -> None:
        self.started: list[str] = []

    @hookimpl
    def bpmnlite_instance_started(self, instance_id: str) -> None:
        self.started.append(instance_id)


def test_the_installed_script_plugin_is_found_through_its_entry_point_alone() -> None:
    names = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="bpmnlite")}
    assert names.get("python") == "bpmnlite_script"

    registry = PluginRegistry()

    assert registry.script_language("python") is bpmnlite_script.python_script
    assert {"python", "py", "python3"} <= set(registry.known_script_languages())


def test_without_entry_points_nothing_is_registered() -> None:
    registry = PluginRegistry(load_entry_points=False)

    assert registry.script_language("python") is None
    assert registry.known_script_languages() == []
    assert registry.known_task_types() == []


def test_explicit_plugins_are_registered_beside_entry_points() -> None:
    registry = PluginRegistry(plugins=[TaskTypes()])
    registry.register(Groovy(), name="groovy-plugin")

    assert registry.task_handler("test-http") is handler
    assert registry.task_handler("ftp") is None
    assert {"test-http", "test-mail"} <= set(registry.known_task_types())
    assert registry.script_language("groovy") is not None
    assert registry.script_language("python") is bpmnlite_script.python_script
    assert {k: v for k, v in registry.task_types.items() if k.startswith("test-")} == {"test-http": handler, "test-mail": handler}


def test_script_formats_are_looked_up_case_insensitively_and_default_to_python() -> None:
    registry = PluginRegistry(load_entry_points=False, plugins=[bpmnlite_script, Groovy()])
    python = bpmnlite_script.python_script

    for fmt in ("python", "Python", "PYTHON", " python ", "Py", "python3", None, ""):
        assert registry.script_language(fmt) is python, fmt
    assert registry.script_language("GROOVY") is registry.script_language("groovy") is not None
    assert registry.script_language("javascript") is None
    assert registry.known_script_languages() == ["groovy", "py", "python", "python3"]


def test_a_name_registered_by_two_plugins_names_both() -> None:
    registry = PluginRegistry(load_entry_points=False, plugins=[TaskTypes()])

    with pytest.raises(PluginError) as caught:
        registry.register(OtherHttp(), name="other")

    message = str(caught.value)
    assert "task type 'test-http'" in message
    assert "'TaskTypes'" in message and "'other'" in message


def test_a_script_format_clash_is_found_whatever_its_case() -> None:
    class Shouting:
        @hookimpl
        def bpmnlite_script_languages(self) -> Mapping[str, Any]:
            return {"PYTHON": Runner()}

    registry = PluginRegistry(load_entry_points=False, plugins=[bpmnlite_script])

    with pytest.raises(PluginError, match=r"script language 'python' is registered by both plugin"):
        registry.register(Shouting(), name="shouting")


def test_a_failed_registration_leaves_the_registry_as_it_was() -> None:
    registry = PluginRegistry(load_entry_points=False, plugins=[TaskTypes()])
    clash = OtherHttp()

    with pytest.raises(PluginError):
        registry.register(clash)

    assert registry.known_task_types() == ["test-http", "test-mail"]
    registry.register(Groovy())  # the registry still works
    assert registry.script_language("groovy") is not None


def test_a_misspelled_hook_fails_at_registration() -> None:
    class Typo:
        @hookimpl
        def bpmnlite_task_typess(self) -> Mapping[str, Any]:
            return {"test-http": handler}

    registry = PluginRegistry(load_entry_points=False)

    with pytest.raises(PluginError, match=r"'bpmnlite_task_typess'.*did you mean 'bpmnlite_task_types'"):
        registry.register(Typo(), name="typo")
    assert registry.known_task_types() == []


def test_a_hook_without_the_hookimpl_marker_fails_at_registration() -> None:
    class Unmarked:
        def bpmnlite_task_types(self) -> Mapping[str, Any]:
            return {"test-http": handler}

    with pytest.raises(PluginError, match=r"'bpmnlite_task_types' without marking it with @bpmnlite.hookimpl"):
        PluginRegistry(load_entry_points=False, plugins=[Unmarked()])


def test_a_hook_taking_arguments_its_spec_does_not_have_fails_at_registration() -> None:
    class ExtraArgument:
        @hookimpl
        def bpmnlite_instance_started(self, instance_id: str, colour: str) -> None:
            pass

    with pytest.raises(PluginError, match=r"(?s)cannot register plugin 'ExtraArgument'.*colour"):
        PluginRegistry(load_entry_points=False, plugins=[ExtraArgument()])


def test_a_registration_hook_must_return_a_mapping_of_usable_values() -> None:
    class NotAMapping:
        @hookimpl
        def bpmnlite_task_types(self) -> Any:
            return ["test-http"]

    class NotCallable:
        @hookimpl
        def bpmnlite_task_types(self) -> Any:
            return {"test-http": 42}

    class NoRun:
        @hookimpl
        def bpmnlite_script_languages(self) -> Any:
            return {"lua": object()}

    registry = PluginRegistry(load_entry_points=False)
    with pytest.raises(PluginError, match="must return a mapping of names, not list"):
        registry.register(NotAMapping())
    with pytest.raises(PluginError, match="task type 'test-http' must be a callable, not int"):
        registry.register(NotCallable())
    with pytest.raises(PluginError, match=r"script language 'lua' must be an object with a run\(\) method"):
        registry.register(NoRun())


def test_registering_the_same_plugin_twice_is_a_no_op() -> None:
    plugin = TaskTypes()
    registry = PluginRegistry(load_entry_points=False, plugins=[plugin])

    registry.register(plugin)
    registry.register(plugin, name="again")

    assert registry.known_task_types() == ["test-http", "test-mail"]


def test_a_plugin_passed_explicitly_and_found_as_an_entry_point_counts_once() -> None:
    registry = PluginRegistry(plugins=[bpmnlite_script])

    assert registry.script_language("python") is bpmnlite_script.python_script


def test_two_plugins_cannot_share_a_name() -> None:
    registry = PluginRegistry(load_entry_points=False, plugins=[TaskTypes()])

    with pytest.raises(PluginError, match="name is already used"):
        registry.register(Groovy(), name="TaskTypes")


def test_an_entry_point_that_fails_to_load_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = importlib.metadata.EntryPoint(name="broken", value="bpmnlite_no_such_module", group="bpmnlite")
    monkeypatch.setattr(plugins.importlib.metadata, "entry_points", lambda group: [broken])

    with pytest.raises(PluginError) as caught:
        PluginRegistry()

    message = str(caught.value)
    assert "entry point 'broken' (bpmnlite_no_such_module)" in message
    assert "ModuleNotFoundError" in message


def test_listener_hooks_are_reached_through_the_relay() -> None:
    listener = Listener()
    registry = PluginRegistry(load_entry_points=False)
    assert not registry.has_listeners("bpmnlite_instance_started")

    registry.register(listener)

    assert registry.has_listeners("bpmnlite_instance_started")
    assert not registry.has_listeners("bpmnlite_instance_ended")
    assert not registry.has_listeners("bpmnlite_task_types")  # a registration hook, not a listener
    assert not registry.has_listeners("no_such_hook")
    registry.hook.bpmnlite_instance_started(instance_id="i-1", process_key="p", variables={})
    assert listener.started == ["i-1"]


def test_expression_functions_are_collected() -> None:
    class Functions:
        @hookimpl
        def bpmnlite_expression_functions(self) -> Mapping[str, Any]:
            return {"double": lambda x: 2 * x}

    registry = PluginRegistry(load_entry_points=False, plugins=[Functions()])

    assert registry.expression_functions["double"](4) == 8


def test_lookup_tables_are_read_only() -> None:
    registry = PluginRegistry(load_entry_points=False, plugins=[TaskTypes()])

    with pytest.raises(TypeError):
        registry.task_types["x"] = handler  # type: ignore[index]
