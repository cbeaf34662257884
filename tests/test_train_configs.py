"""Training configs: presets, `--set` overrides, JSON round trip, the CLI's config handling."""
import dataclasses
import json

import pytest

from trainers import configs, main


@pytest.mark.parametrize("name", sorted(configs.PRESETS))
def test_every_preset_validates_and_documents_its_launch_command(name):
    config = configs.get_config(name)
    assert isinstance(config, configs.Config)
    doc = configs.PRESETS[name].__doc__
    assert f"hccr-train --config {name}" in doc or "--config" in doc


def test_override_converts_to_field_types():
    config = configs.override(configs.get_config("smoke"), [
        "epochs=3", "learning_rate=0.01", "augment=false", "l2=none", "dropout=0.5",
        "line_bucket_boundaries=64,128", 'model_overrides={"embedding_dim": 16}',
        "strategy=mirrored", "jit_compile=none"])
    assert config.epochs == 3 and config.learning_rate == 0.01
    assert config.augment is False and config.l2 is None and config.dropout == 0.5
    assert config.line_bucket_boundaries == (64, 128)
    assert config.model_overrides == {"embedding_dim": 16}
    assert config.strategy == "mirrored" and config.jit_compile is None


def test_unknown_key_and_bad_values_fail_with_the_key():
    with pytest.raises(ValueError, match="Unknown config key 'epoch'.*epochs"):
        configs.override(configs.Config(), ["epoch=3"])
    with pytest.raises(ValueError, match="augment takes true/false"):
        configs.override(configs.Config(), ["augment=maybe"])
    with pytest.raises(ValueError, match="key=value"):
        configs.override(configs.Config(), ["epochs"])
    with pytest.raises(ValueError, match="optimizer must be one of"):
        configs.override(configs.Config(), ["optimizer=adagrad"])
    with pytest.raises(ValueError, match="reduce_lr_on_plateau needs"):
        configs.override(configs.Config(), ["lr_schedule=cosine", "reduce_lr_on_plateau=true"])
    with pytest.raises(ValueError, match="Unknown config"):
        configs.get_config("nope")


def test_json_round_trip(tmp_path):
    config = configs.override(configs.get_config("casia-sample"), ["epochs=2"])
    path = str(tmp_path / "config.json")
    configs.save(config, path)
    assert configs.load(path) == config
    assert configs.get_config(path) == config
    assert json.loads(config.to_json())["model_overrides"]["stage_filters"] == [32, 64, 128]


def test_cli_prints_the_effective_config(capsys):
    assert main.main(["--config", "smoke", "--data", "unused", "--workdir", "unused",
                      "--set", "epochs=5", "--precision", "float32", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["epochs"] == 5 and printed["precision"] == "float32"
    expected = dataclasses.asdict(configs.override(configs.smoke(), ["epochs=5",
                                                                     "precision=float32"]))
    assert printed == json.loads(json.dumps(expected))


def test_cli_rejects_an_unknown_key(capsys):
    assert main.main(["--config", "smoke", "--data", "x", "--workdir", "y",
                      "--set", "learnig_rate=1"]) == 2
    assert "learning_rate" in capsys.readouterr().err
