"""The one place the job relies on Apache Beam internals: the local runner's construction.

Why: since Beam 2.68 the DirectRunner (`SwitchingDirectRunner.run_pipeline`) first tries the
Prism runner, which it downloads from GitHub, and falls back to the FnApiRunner only when that
fails (apache/beam#34549, "Make Prism default"; PR #34612 advises pinning the FnApiRunner). The
public way to pin it, `--runner FnApiRunner`, builds `FnApiRunner()` without provision info, so
worker processes (`--direct_running_mode multi_processing`) start with no pipeline options:
no `--s3_endpoint_url` or credentials for their filesystems, no
`--default_sdk_harness_log_level`. The local job service hands the options to those workers
only through the provision info. So `fn_api_runner` copies the few lines of
`SwitchingDirectRunner.run_pipeline` (apache_beam/runners/direct/direct_runner.py, Beam 2.77)
that build the FnApiRunner with the options in its provision info.

`private_api_problems` names what those lines need from the installed Beam;
tests/test_pipeline_units.py fails with its message when an upgrade removes or renames any of it.
"""
from __future__ import annotations

import inspect

from apache_beam.options.pipeline_options import PipelineOptions

# (module, attribute path, the keyword argument it must take or, for a protobuf message, the
# field it must have)
REQUIRED = (
    ("apache_beam.runners.portability.fn_api_runner.fn_runner", "FnApiRunner", "provision_info"),
    ("apache_beam.runners.portability.fn_api_runner.fn_runner", "ExtendedProvisionInfo",
     "provision_info"),
    ("apache_beam.runners.portability.portable_runner",
     "JobServiceHandle.encode_pipeline_options", "all_options"),
    ("apache_beam.portability.api", "beam_provision_api_pb2.ProvisionInfo", "pipeline_options"),
)


def private_api_problems() -> list[str]:
    """What `fn_api_runner` needs and the installed Beam lacks, in words (empty when nothing)."""
    import importlib

    import apache_beam
    problems = []
    for module_name, path, needed in REQUIRED:
        where = f"{module_name}.{path}"
        try:
            obj = importlib.import_module(module_name)
            for name in path.split("."):
                obj = getattr(obj, name)
        except (ImportError, AttributeError) as err:
            problems.append(f"{where} is gone ({err})")
            continue
        if hasattr(obj, "DESCRIPTOR"):  # a protobuf message
            if needed not in obj.DESCRIPTOR.fields_by_name:
                problems.append(f"{where} has no {needed!r} field any more")
        elif needed not in inspect.signature(obj).parameters:
            problems.append(f"{where} takes no {needed!r} argument any more")
    return [f"apache-beam {apache_beam.__version__}: {p}; compare "
            f"SwitchingDirectRunner.run_pipeline and update beam_preprocess/job/beam_private.py"
            for p in problems]


def fn_api_runner(options: PipelineOptions):
    """Beam's FnApiRunner, set up as the DirectRunner sets it up (pipeline options passed to
    the workers), minus the DirectRunner's attempt to download and use Prism.

    Raises:
      RuntimeError: the installed Beam lacks an internal this relies on (named).
    """
    problems = private_api_problems()
    if problems:
        raise RuntimeError(problems[0])
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))
