"""Settings: precedence of sources, validation errors that name the field, the TOML dump."""

from __future__ import annotations

from pathlib import Path

import pytest

from plasticd.config import load_settings
from plasticd.config_text import describe_settings, parse_overrides
from plasticd.errors import ConfigError


def test_defaults_are_documented_values() -> None:
    s = load_settings()
    assert (s.model.neurons, s.model.iterations, s.model.sparsity) == (400, 5, 0.5)
    assert s.runtime.device == "auto"
    assert s.train.optimizer == "adam" and s.train.max_batch == 8 and s.drift.detector == "adwin"
    assert load_settings(None, {"train": {"optimizer": "sgd"}}).train.rate_for(784) == 5e-3
    adam = s.train
    assert adam.rate_for(8) == 1e-3 and abs(adam.rate_for(800) - 1e-4) < 1e-12, "Adam's default shrinks with the input width"
    assert load_settings(None, {"train": {"optimizer": "adam", "lr": 0.01}}).train.rate_for(800) == 0.01


def test_precedence_file_then_env_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "plasticd.toml"
    cfg.write_text("[model]\nneurons = 100\niterations = 3\nsparsity = 0.25\n[train]\nlr = 0.01\n")
    monkeypatch.setenv("PLASTICD_MODEL__ITERATIONS", "7")
    monkeypatch.setenv("PLASTICD_MODEL__SPARSITY", "0.4")
    s = load_settings(cfg, {"model": {"sparsity": 0.6}})
    assert s.model.neurons == 100  # file
    assert s.model.iterations == 7  # env beats file
    assert s.model.sparsity == 0.6  # flag beats env
    assert s.train.lr == 0.01 and s.model.input_dim == 784  # untouched fields keep their defaults


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"model": {"neurons": 0}}, "model.neurons"),
        ({"model": {"sparsity": 1.0}}, "model.sparsity"),
        ({"train": {"lr": -1}}, "train.lr"),
        ({"runtime": {"device": "tpu"}}, "runtime.device"),
        ({"plasticity": {"prune_fraction": 1.5}}, "plasticity.prune_fraction"),
        ({"modle": {"neurons": 3}}, "modle"),
        ({"model": {"neuron": 3}}, "model.neuron"),
    ],
)
def test_validation_errors_name_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, overrides)
    assert field in str(err.value)


def test_cross_field_check_names_both_fields() -> None:
    with pytest.raises(ConfigError, match="min_sparsity.*max_sparsity"):
        load_settings(None, {"plasticity": {"min_sparsity": 0.8, "max_sparsity": 0.5}})


def test_bad_env_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLASTICD_MODEL__NEURONS", "many")
    with pytest.raises(ConfigError, match="model.neurons"):
        load_settings()


def test_missing_or_broken_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nneurons = 3")
    with pytest.raises(ConfigError, match="bad.toml.*not valid TOML"):
        load_settings(bad)


def test_parse_overrides_types_values() -> None:
    tree = parse_overrides(["model.neurons=800", "train.lr=1e-3", "model.input_norm=false", "paths.inbox=/tmp/in"])
    assert tree == {"model": {"neurons": 800, "input_norm": False}, "train": {"lr": 1e-3}, "paths": {"inbox": "/tmp/in"}}
    with pytest.raises(ConfigError, match="section.field=value"):
        parse_overrides(["neurons"])


def test_describe_settings_is_a_loadable_config(tmp_path: Path) -> None:
    s = load_settings(None, {"model": {"neurons": 123}, "train": {"betas": [0.8, 0.9]}})
    path = tmp_path / "dump.toml"
    path.write_text(describe_settings(s))
    assert load_settings(path) == s
