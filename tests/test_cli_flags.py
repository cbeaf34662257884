"""Every hccr-* command's flags against its config: each field has a flag and the flag's default
is the field's, so a default is written once. Plus the flag maker, beam_preprocess.dataclass_flags.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import typing
from collections.abc import Sequence
from unittest import mock

import pytest

from beam_preprocess import dataclass_flags


@dataclasses.dataclass(frozen=True)
class Sample:
    """A config for the tests.

    Attributes:
      path: where it goes.
      count: how many; a second line
        continues the same entry.
      rate: a fraction (0.5 is half).
      name: a word.
      fast: run fast.
      limit: at most this many (default: no limit).
      sizes: the sizes.
      words: the words.
      tags: kept apart.
    """
    path: str
    count: int = 3
    rate: float = 0.5
    name: str = "x"
    fast: bool = True
    limit: int | None = None
    sizes: tuple[int, ...] = (1, 2)
    words: Sequence[str] = ("a",)
    tags: tuple = ()


def _parser(cls=Sample, **kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="test")
    dataclass_flags.add_flags(parser, cls, **kwargs)
    return parser


def _defaults_and_help(parser: argparse.ArgumentParser) -> dict[str, tuple[object, str]]:
    return {a.dest: (a.default, a.help) for a in parser._actions}


# === dataclass_flags ===


def test_defaults_give_the_dataclass_defaults():
    args = _parser().parse_args(["--path", "p"])
    assert dataclass_flags.from_args(Sample, args) == Sample(path="p")


def test_each_type_parses():
    args = _parser().parse_args([
        "--path", "p", "--count", "5", "--rate", "0.25", "--name", "y", "--no-fast",
        "--limit", "7", "--sizes", "4,5", "--sizes", "6", "--words", "b, c", "--tags", "t"])
    assert dataclass_flags.from_args(Sample, args) == Sample(
        path="p", count=5, rate=0.25, name="y", fast=False, limit=7, sizes=(4, 5, 6),
        words=("b", "c"), tags=("t",))
    assert _parser().parse_args(["--path", "p", "--fast"]).fast is True


def test_bad_values_and_missing_required_flags_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["--path", "p", "--count", "many"])
    assert exit_.value.code == 2 and "--count" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parser().parse_args(["--path", "p", "--sizes", "1,two"])
    with pytest.raises(SystemExit):
        _parser().parse_args([])  # --path is required: the field has no default


def test_a_literal_field_is_a_choice(capsys):
    @dataclasses.dataclass
    class Mode:
        """A mode.

        Attributes:
          mode: how to run.
        """
        mode: typing.Literal["off", "fast", "slow"] = "off"

    assert _parser(Mode).parse_args([]).mode == "off"
    assert _parser(Mode).parse_args(["--mode", "slow"]).mode == "slow"
    with pytest.raises(SystemExit) as exit_:
        _parser(Mode).parse_args(["--mode", "medium"])
    assert exit_.value.code == 2
    assert "invalid choice: 'medium' (choose from 'off', 'fast', 'slow')" in \
        capsys.readouterr().err


def test_help_comes_from_the_docstring():
    assert dataclass_flags.field_help(Sample)["count"] == (
        "how many; a second line continues the same entry.")
    helps = {dest: text for dest, (_, text) in _defaults_and_help(_parser()).items()}
    assert helps["count"] == "how many; a second line continues the same entry (default: 3)"
    assert helps["rate"] == "a fraction (0.5 is half) (default: 0.5)"
    assert helps["fast"] == "run fast (default: --fast)"
    assert helps["limit"] == "at most this many (default: no limit)"
    assert helps["sizes"] == "the sizes (comma-separated, or repeat the flag) (default: 1,2)"
    assert helps["tags"] == "kept apart (comma-separated, or repeat the flag)"
    text = _parser().format_help()
    assert "--fast, --no-fast" in text and "--sizes SIZES,..." in text


def test_names_exclude_converters_and_help_overrides():
    parser = _parser(exclude=("tags",), names={"path": "--out"}, converters={"words": str},
                     help_overrides={"name": "another word"})
    args = parser.parse_args(["--out", "o", "--words", "a,b"])
    assert args.path == "o" and args.words == "a,b" and not hasattr(args, "tags")
    assert _defaults_and_help(parser)["name"][1] == "another word (default: x)"
    assert dataclass_flags.from_args(Sample, args, words=("z",)) == Sample(path="o",
                                                                           words=("z",))


def test_a_field_without_help_or_flag_type_is_refused():
    @dataclasses.dataclass
    class NoHelp:
        """One field documented.

        Attributes:
          a: documented.
        """
        a: int = 1
        b: int = 2

    with pytest.raises(ValueError, match=r"NoHelp\.b has no help"):
        _parser(NoHelp)

    @dataclasses.dataclass
    class Mapped:
        """A field of a type without a flag.

        Attributes:
          table: a mapping.
        """
        table: dict = dataclasses.field(default_factory=dict)

    with pytest.raises(TypeError, match=r"Mapped\.table: no command-line flag"):
        _parser(Mapped)
    assert _parser(Mapped, converters={"table": json.loads}).parse_args([]).table == {}


def test_check_flags_finds_a_missing_flag_and_a_drifted_default():
    assert dataclass_flags.check_flags(_parser(), Sample) == []
    parser = argparse.ArgumentParser()
    parser.add_argument("--path")
    parser.add_argument("--count", type=int, default=4)
    problems = dataclass_flags.check_flags(parser, Sample, exclude=("sizes", "words", "tags"))
    assert problems == ["Sample.count: flag --count defaults to 4, the field to 3",
                        "Sample.rate: no flag", "Sample.name: no flag", "Sample.fast: no flag",
                        "Sample.limit: no flag"]


# === Every command ===


def test_hccr_export_flags_are_export_config():
    from trainers.serving import export, export_cli
    parser = export_cli.build_parser()
    assert dataclass_flags.check_flags(parser, export.ExportConfig) == []
    args = parser.parse_args(["--model", "m", "--data", "d", "--out", "o", "--batch-size", "8",
                              "--quiet", "--formats", "tflite,onnx"])
    config = dataclass_flags.from_args(export.ExportConfig, args,
                                       formats=export.parse_formats(args.formats))
    assert config == export.ExportConfig(formats=[*export.TFLITE_FORMATS, "onnx"],
                                         batch_size=8, progress=False)
    default = parser.parse_args(["--model", "m", "--data", "d", "--out", "o"]).formats
    assert export.parse_formats(default) == list(export.DEFAULT_FORMATS)


def test_hccr_eval_flags_are_eval_config():
    from trainers.serving import eval_cli, evaluation
    parser = eval_cli.build_parser()
    assert dataclass_flags.check_flags(parser, evaluation.EvalConfig) == []
    args = parser.parse_args(["--model", "m", "--data", "d", "--out", "o", "--confused", "3",
                              "--split", "validation", "--quiet"])
    assert dataclass_flags.from_args(evaluation.EvalConfig, args) == evaluation.EvalConfig(
        split="validation", num_confused=3, progress=False)
    # evaluate() itself defaults to the same values as the flags.
    parameters = inspect.signature(evaluation.evaluate).parameters
    for field in dataclasses.fields(evaluation.EvalConfig):
        if parameters[field.name].default is not inspect.Parameter.empty:
            assert parameters[field.name].default == field.default, field.name


def test_hccr_synth_flags_are_synth_spec():
    from beam_preprocess.synthetic import synth, synth_cli
    parser = synth_cli.build_parser()
    assert dataclass_flags.check_flags(parser, synth.SynthSpec, exclude=("chars",)) == []
    args = parser.parse_args(["--out", "o", "--writers", "2", "--line-length", "3,9",
                              "--font-dir", "a", "--font-dir", "b"])
    assert dataclass_flags.from_args(synth.SynthSpec, args, chars=("永",)) == synth.SynthSpec(
        out_dir="o", chars=("永",), writers=2, line_length=(3, 9), font_dirs=("a", "b"))


def test_hccr_synth_refuses_a_bad_line_length(tmp_path, capsys):
    from beam_preprocess.synthetic import synth_cli
    assert synth_cli.main(["--out", str(tmp_path), "--chars", "永", "--line-length", "9,3",
                           "--quiet"]) == 2
    assert "--line-length takes MIN,MAX" in capsys.readouterr().err


def test_hccr_predict_defaults_are_the_predictors():
    """hccr-predict has no config dataclass: its defaults are checked against the signatures
    of the functions they are passed to."""
    from trainers.serving import predict, predict_cli
    args = predict_cli.build_parser().parse_args(["--model", "m", "x.png"])
    init = inspect.signature(predict.Predictor).parameters
    for name in ("top_k", "beam_width", "threads", "tta"):
        assert getattr(args, name) == init[name].default, name
    files = inspect.signature(predict.Predictor.predict_files).parameters
    assert args.batch_size == files["batch_size"].default


def test_hccr_preprocess_flags_are_job_config():
    from beam_preprocess.contract.tfrecords import COMPRESSIONS
    from beam_preprocess.job import pipeline
    from beam_preprocess.job.transforms import JobConfig
    parser = pipeline.build_parser()
    # Settings of the workers that the command line does not offer.
    not_flags = ("ink_threshold", "synth_char_height", "max_line_width")
    # Flags written in words that the driver converts: checked after conversion below.
    converted = ("compression", "synth_line_chars")
    assert dataclass_flags.check_flags(parser, JobConfig, exclude=not_flags + converted) == []
    defaults = vars(parser.parse_args(["--output", "o"]))
    assert COMPRESSIONS[defaults["compression"]] == JobConfig.compression
    assert pipeline._parse_range(defaults["synth_line_chars"]) == JobConfig.synth_line_chars


def _train_parser() -> argparse.ArgumentParser:
    from trainers.training import main
    # main.parse_args builds its parser and parses at once: take the parser as it parses.
    with mock.patch.object(argparse.ArgumentParser, "parse_args", lambda self, argv=None: self):
        return main.parse_args([])


def _set_text(value) -> str:
    """A config value as `--set key=value` writes it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return json.dumps(list(value))[1:-1]
    if isinstance(value, dict):
        return json.dumps(value)
    return repr(value) if isinstance(value, float) else str(value)


def test_hccr_train_sets_every_field_of_every_preset():
    """Each preset, rebuilt from the smoke preset by one `--set` per field, is that preset."""
    from trainers.training import configs, main
    for name in sorted(configs.PRESETS):
        preset = configs.get_config(name)
        sets = [word for field in dataclasses.fields(preset) for word in
                ("--set", f"{field.name}={_set_text(getattr(preset, field.name))}")]
        args = main.parse_args(["--config", "smoke", "--data", "d", "--workdir", "w", *sets])
        # Compared as JSON (tuples and lists alike, 2 == 2.0 for a float field a preset
        # writes as 2): what config.json of the run would hold.
        rebuilt = json.loads(main.effective_config(args).to_json())
        assert rebuilt == json.loads(preset.to_json()), name


def test_hccr_train_shorthands_offer_the_configs_lists():
    from trainers.training import configs
    choices = {a.dest: a.choices for a in _train_parser()._actions}
    assert tuple(choices["strategy"]) == configs.STRATEGIES
    assert tuple(choices["precision"]) == configs.PRECISIONS


def test_hccr_launch_choices_are_the_configs_lists():
    from beam_preprocess.contract import schema
    from launch import cli
    from trainers.training import configs
    subparsers = next(a for a in cli.build_parser()._actions
                      if isinstance(a, argparse._SubParsersAction)).choices
    for launcher in ("local", "horovod", "multiworker", "slurm", "k8s"):
        choices = {a.dest: a.choices for a in subparsers[launcher]._actions}
        assert tuple(choices["precision"]) == configs.PRECISIONS, launcher
        # The cluster launchers set up a subset of the trainer's strategies.
        assert set(choices.get("strategy") or ()) <= set(configs.STRATEGIES), launcher
    beam_choices = {a.dest: a.choices for a in subparsers["beam"]._actions}
    assert tuple(beam_choices["task"]) == schema.TASKS
