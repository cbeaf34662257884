"""Training configs: presets, `--set` overrides, JSON round trip, the CLI's config handling."""
import dataclasses
import json
import shlex

import pytest

from trainers.training import configs, main


def documented_launches(doc: str) -> list[tuple[list[str], list[str]]]:
    """The `hccr-train` commands of a docstring: `(launcher words, hccr-train arguments)` per
    command, continuation lines joined and a trailing `# comment` dropped."""
    commands = []
    for line in doc.replace("\\\n", " ").splitlines():
        if "hccr-train" not in line:
            continue
        words = shlex.split(line, comments=True)
        at = words.index("hccr-train")
        commands.append((words[:at], words[at + 1:]))
    return commands


@pytest.mark.parametrize("name", sorted(configs.PRESETS))
def test_every_preset_validates_and_documents_its_launch_command(name):
    config = configs.get_config(name)
    assert isinstance(config, configs.Config)
    launches = documented_launches(configs.PRESETS[name].__doc__ or "")
    assert launches, f"preset {name!r}: no hccr-train command in its docstring"
    for launcher, argv in launches:
        command = shlex.join(["hccr-train", *argv])
        try:
            args = main.parse_args(argv)  # every flag exists; --data and --workdir are given
        except SystemExit:
            pytest.fail(f"preset {name!r}: {command!r} is not a valid hccr-train command")
        assert args.config == name, f"preset {name!r} documents {command!r}"
        launched = main.effective_config(args)  # the overrides it passes validate
        if "horovodrun" in launcher:  # one process per GPU: without it, N separate runs
            assert launched.strategy == "horovod", f"preset {name!r}: {command!r}"
    # Model selection (best.keras, plateau, early stopping) never sees the test split.
    assert config.eval_split == "validation", (name, config.eval_split)


def test_documented_launches_finds_each_command_and_its_launcher():
    doc = """Text that names no command.

        hccr-train --config a --data d --workdir w  # a comment
        horovodrun -np 2 hccr-train --config a \\
            --strategy horovod --data d --workdir 'w x'
    """
    assert documented_launches(doc) == [
        ([], ["--config", "a", "--data", "d", "--workdir", "w"]),
        (["horovodrun", "-np", "2"],
         ["--config", "a", "--strategy", "horovod", "--data", "d", "--workdir", "w x"])]


def test_every_field_has_a_rule_that_refuses_a_bad_value():
    fields = [f.name for f in dataclasses.fields(configs.Config)]
    assert sorted(configs.RULES) == sorted(fields)
    base = configs.get_config("smoke")
    for name in fields:
        rule = configs.RULES[name]
        assert rule.check(getattr(base, name)), name
        bad = dataclasses.replace(base, **{name: rule.bad_example})
        with pytest.raises(configs.ConfigError) as caught:
            bad.validate()
        message = str(caught.value)
        assert caught.value.field == name and f"{name}=" in message and "allowed:" in message
        assert "\n" not in message


@pytest.mark.parametrize("assignment, expected", [
    ("steps_per_epoch=-3", "steps_per_epoch=-3; allowed: an integer >= 0"),
    ("learning_rate=nan", "learning_rate=nan; allowed: a finite number > 0"),
    ("learning_rate=inf", "learning_rate=inf; allowed: a finite number > 0"),
    ("checkpoint_every_steps=-1", "checkpoint_every_steps=-1; allowed: an integer >= 0"),
    ("eval_steps=-5", "eval_steps=-5; allowed: an integer >= 0"),
    ("dropout=7", "dropout=7.0; allowed: none (the model's default) or a number in [0, 1)"),
    ("per_replica_batch_size=0", "per_replica_batch_size=0; allowed: an integer >= 1"),
    ("momentum=1", "momentum=1.0; allowed: a number in [0, 1)"),
    ("monitor=val_acc", "monitor='val_acc'; allowed: one of val_loss"),
    ("eval_split=train", "eval_split='train'; allowed: a split other than train_split"),
    ("aug_scale_min=1.2", "aug_scale_max=1.1; allowed: >= aug_scale_min=1.2"),
    ("seed=-1", "seed=-1; allowed: an integer in [0, 4294967295]"),
    ("line_bucket_boundaries=512,256", "line_bucket_boundaries=(512, 256); allowed: increasing"),
])
def test_cli_refuses_an_invalid_value_before_anything_runs(assignment, expected, capsys,
                                                           tmp_path):
    workdir = tmp_path / "never"
    assert main.main(["--config", "smoke", "--data", str(tmp_path / "no-data"), "--workdir",
                      str(workdir), "--set", assignment]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hccr-train: error: invalid config: "), err
    assert expected in err
    assert not workdir.exists()


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
    with pytest.raises(ValueError, match="optimizer='adagrad'; allowed: one of adam"):
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


def test_every_preset_logs_to_tensorboard():
    # TensorBoard is on by default; a preset may turn it off only with a reason in its docstring.
    for name, make in configs.PRESETS.items():
        config = make()
        assert config.tensorboard or "tensorboard" in (make.__doc__ or "").lower(), name


def test_casia_sample_trains_a_fixed_budget_whatever_the_split_size():
    """The recipe's budget is steps, not passes: mixing synthetic writers into the training split
    must not change how long it trains (that is how it was measured on the outside writers)."""
    import types

    from trainers.training import train
    config = configs.get_config("casia-sample")
    sizes = (11_154, 11_154 + 200 * 21, 500)  # the four files, + 200 synthetic writers, tiny
    budgets = {train.steps_per_epoch(config, types.SimpleNamespace(num_examples=lambda _: n), 64)
               * config.epochs for n in sizes}
    assert budgets == {6_692}
    by_passes = configs.override(config, ["steps_per_epoch=0", "epochs=2"])
    assert train.steps_per_epoch(
        by_passes, types.SimpleNamespace(num_examples=lambda _: 11_154), 64) == 11_154 // 64
