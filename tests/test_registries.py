"""Each set of names has one registry; everything else that lists the names must agree with it."""

from __future__ import annotations

import argparse

import yaml

from hetsfl.config import SCHEMA_PATH
from hetsfl.optim.problem import load_json_schema
from hetsfl.optim.solvers import METHODS, REFERENCE_METHODS, SEQUENTIAL, SOLVERS
from hetsfl.stages.common import TRAIN_METHODS


def _config_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _subcommand_choices(command: str, option: str) -> list[str]:
    from hetsfl.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return list(next(a for a in sub._actions if option in a.option_strings).choices)


def test_config_schema_optimise_methods_are_the_solver_registry():
    enum = _config_schema()["properties"]["optimize"]["properties"]["methods"]["items"]["enum"]
    assert enum == list(METHODS)
    assert set(SOLVERS) == set(METHODS) | REFERENCE_METHODS
    assert SEQUENTIAL <= set(METHODS)


def test_config_schema_train_methods_are_the_training_registry():
    enum = _config_schema()["properties"]["train"]["properties"]["methods"]["items"]["enum"]
    assert enum == list(TRAIN_METHODS)


def test_training_methods_use_registered_solvers_and_engine_methods():
    from hetsfl.train.methods import METHODS as ENGINE_METHODS

    for name, entry in TRAIN_METHODS.items():
        assert entry.solution_method in METHODS, name
        assert entry.engine_method in ENGINE_METHODS, name


def test_solution_schema_methods_are_the_solver_registry():
    assert load_json_schema("solution")["properties"]["method"]["enum"] == list(SOLVERS)


def test_cli_choices_are_the_registries():
    assert _subcommand_choices("optimize", "--method") == list(SOLVERS)
    assert _subcommand_choices("train", "--method") == list(TRAIN_METHODS)


def test_scenario_devices_are_problem_devices():
    assert load_json_schema("scenario")["properties"]["devices"] == load_json_schema("problem")["properties"]["devices"]


def test_every_registered_method_has_a_report_label_and_style():
    from hetsfl.report.style import _STYLE, METHOD_LABELS
    from hetsfl.stages.emulate import EMULATE_METHODS

    names = set(SOLVERS) | set(TRAIN_METHODS) | set(EMULATE_METHODS)
    assert names <= set(METHOD_LABELS), sorted(names - set(METHOD_LABELS))
    assert names <= set(_STYLE), sorted(names - set(_STYLE))
    assert set(METHOD_LABELS) <= names  # no label for a method that no longer exists
    assert len(set(METHOD_LABELS.values())) == len(METHOD_LABELS)
