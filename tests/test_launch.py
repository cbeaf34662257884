"""hccr-launch: every launcher's dry-run render checked for its commands and environment, the
generated scripts run against stand-ins for the cluster tools (srun, scontrol, sbatch,
kubectl), missing tools reported by name, and the local horovodrun path run for real."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import stat
import subprocess
import sys

import pytest
import yaml

from launch import beam, cli, horovod, hosts, k8s, multiworker, slurm, submit, train_job
from launch.beam import BeamJobSpec
from launch.errors import LaunchError
from launch.plan import Requirement, dns_name, format_command
from launch.slurm import SlurmJobSpec
from launch.train_job import TrainJob

BIN = os.path.dirname(sys.executable)
JOB = TrainJob(config="smoke", data="data/chars", workdir="runs/smoke",
               overrides=("epochs=1",))
TRAIN = ["hccr-train", "--config", "smoke", "--data", "data/chars", "--workdir", "runs/smoke",
         "--set", "epochs=1"]


# === Helpers ===


def logical_lines(text: str) -> list[str]:
    """The script's commands: continuation lines joined, comments and blanks dropped."""
    joined = text.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def find_command(text: str, program: str) -> list[str]:
    """The words of the first command running `program` (after `exec` / VAR=value)."""
    for line in logical_lines(text):
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        while words and (words[0] == "exec" or "=" in words[0].split("/")[0]):
            words = words[1:]
        if words and words[0] == program:
            return [w for w in words if w != "&"]
    raise AssertionError(f"no {program} command in:\n{text}")


def bash_syntax_ok(text: str, tmp_path) -> None:
    path = tmp_path / "syntax.sh"
    path.write_text(text)
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr


def dry_run(capsys, *argv) -> str:
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    assert cli.main(argv[:split] + ["--dry-run"] + argv[split:]) == 0
    return capsys.readouterr().out


def shim(directory, name: str, body: str) -> None:
    """An executable stand-in for a cluster tool, written in Python."""
    path = directory / name
    path.write_text(f"#!{sys.executable}\nimport json, os, sys\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


# === The training command and configs ===


def test_train_argv_and_escape_hatch():
    job = TrainJob(config="demo", data="d", workdir="w", overrides=("epochs=3", "seed=1"),
                   precision="float32")
    assert job.argv("horovod") == ["hccr-train", "--config", "demo", "--data", "d",
                                   "--workdir", "w", "--set", "epochs=3", "--set", "seed=1",
                                   "--strategy", "horovod", "--precision", "float32"]
    custom = TrainJob(command=("python", "-c", "print(1)"))
    assert custom.argv("horovod") == ["python", "-c", "print(1)"]
    assert custom.name == "custom"
    with pytest.raises(LaunchError, match="--config"):
        TrainJob()


def test_config_names_and_overrides_are_checked_against_presets():
    train_job.check(JOB)
    with pytest.raises(LaunchError, match="presets: .*smoke"):
        train_job.check(TrainJob(config="no-such-preset"))
    with pytest.raises(LaunchError, match="epochs"):
        train_job.check(TrainJob(config="smoke", overrides=("epoch=3",)))
    train_job.check(TrainJob(config="runs/old/config.json"))  # checked by hccr-train where it runs


def test_any_config_is_accepted_without_trainers(monkeypatch):
    monkeypatch.setattr(train_job, "_configs_module", lambda: None)
    assert train_job.available_presets() is None
    train_job.check(TrainJob(config="hwdb1.1-8gpu"))
    assert train_job.batch_note(TrainJob(config="hwdb1.1-8gpu"), 8) is None


def test_unknown_config_is_a_clear_cli_error(capsys):
    assert cli.main(["local", "--config", "nope", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown config 'nope'" in err and "smoke" in err and "hwdb11" in err


# === Hosts, TF_CONFIG, formatting ===


def test_hosts_and_hostfile(tmp_path):
    assert hosts.parse_hosts("a:4,b:2") == [hosts.Host("a", 4), hosts.Host("b", 2)]
    assert hosts.parse_hosts("a,b", default_slots=8) == [hosts.Host("a", 8),
                                                         hosts.Host("b", 8)]
    with pytest.raises(LaunchError, match="slots"):
        hosts.parse_hosts("a:x")
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# cluster\ngpu1 slots=4\ngpu2:2\ngpu3\n")
    listed = hosts.read_hostfile(str(hostfile))
    assert listed == [hosts.Host("gpu1", 4), hosts.Host("gpu2", 2), hosts.Host("gpu3", 1)]
    assert hosts.resolve_np(None, listed) == 7
    with pytest.raises(LaunchError, match="does not fit"):
        hosts.resolve_np(8, listed)


def test_tf_config_and_worker_ports():
    workers = multiworker.worker_addresses(["a", "b", "a"], 2000)
    assert workers == ["a:2000", "b:2000", "a:2001"]
    config = json.loads(multiworker.tf_config(workers, 2))
    assert config == {"cluster": {"worker": workers}, "task": {"type": "worker", "index": 2}}
    with pytest.raises(ValueError):
        multiworker.tf_config(workers, 3)


def test_format_command_wraps_before_flags_and_keeps_values():
    text = format_command(["horovodrun", "-np", "2"], ["hccr-train"] + ["--set", "x=" + "y" * 80])
    assert text.splitlines()[0] == "horovodrun -np 2 \\"
    assert "--set x=yyy" in text  # a flag and its value are never split
    assert shlex.split(text.replace("\\\n", " ")) == ["horovodrun", "-np", "2", "hccr-train",
                                                      "--set", "x=" + "y" * 80]


# === local and horovod ===


def test_local_dry_run(capsys, tmp_path):
    out = dry_run(capsys, "local", "--np", "2", "--config", "smoke", "--data", "data/chars",
                  "--workdir", "runs/smoke", "--set", "epochs=1")
    assert find_command(out, "horovodrun") == (
        ["horovodrun", "-np", "2", "-H", "localhost:2", "--gloo"] + TRAIN
        + ["--strategy", "horovod"])
    assert f"source {shlex.quote(os.path.join(sys.prefix, 'bin', 'activate'))}" in out
    assert "NCCL" not in out  # no GPUs, no NCCL settings
    assert "global batch 32" in out  # smoke: 16 per replica x 2 ranks
    assert out.rstrip().endswith("# hccr-launch would run: bash hccr-smoke-local.sh")
    bash_syntax_ok(out, tmp_path)


def test_local_mpi_and_gpus():
    plan = horovod.local_plan(JOB, np=4, mpi=True, gpus=4, network_interface="ib0")
    assert find_command(plan.text, "horovodrun")[:6] == ["horovodrun", "-np", "4", "-H",
                                                         "localhost:4", "--mpi"]
    assert "export NCCL_DEBUG=WARN" in plan.text
    assert "export NCCL_SOCKET_IFNAME=ib0" in plan.text
    assert "HOROVOD_GPU_OPERATIONS=NCCL" in plan.text
    assert {r.name for r in plan.requires} >= {"horovodrun", "mpirun", "hccr-train"}


def test_horovod_multi_node_hosts_and_hostfile(capsys, tmp_path):
    out = dry_run(capsys, "horovod", "--hosts", "gpu1,gpu2", "--gpus-per-node", "4",
                  "--network-interface", "eth1", "--config", "smoke", "--data", "data/chars",
                  "--workdir", "runs/smoke", "--set", "epochs=1", "--setup", "module load cuda")
    assert find_command(out, "horovodrun") == (
        ["horovodrun", "-np", "8", "-H", "gpu1:4,gpu2:4", "--gloo", "--network-interface",
         "eth1"] + TRAIN + ["--strategy", "horovod"])
    assert "export NCCL_SOCKET_IFNAME=eth1" in out and "module load cuda" in out
    assert "activate" not in out  # --setup replaces the default
    bash_syntax_ok(out, tmp_path)

    hostfile = tmp_path / "hosts"
    hostfile.write_text("gpu1 slots=2\ngpu2 slots=2\n")
    plan = horovod.horovod_plan(JOB, hostfile=str(hostfile), np=3, mpi=True)
    assert find_command(plan.text, "horovodrun")[:6] == ["horovodrun", "-np", "3",
                                                         "--hostfile", str(hostfile), "--mpi"]
    assert "ssh" in {r.name for r in plan.requires}
    with pytest.raises(LaunchError, match="exactly one"):
        horovod.horovod_plan(JOB)


# === MultiWorkerMirroredStrategy ===


def _worker_lines(text: str) -> list[tuple[dict, list[str]]]:
    found = []
    for line in logical_lines(text):
        words = shlex.split(line)
        if words and words[0].startswith("TF_CONFIG="):
            found.append((json.loads(words[0].split("=", 1)[1]), words[1:-1]))
    return found


def test_multiworker_local_dry_run(capsys, tmp_path):
    out = dry_run(capsys, "multiworker", "--np", "2", "--port", "23456", "--config", "smoke",
                  "--data", "data/chars", "--workdir", "runs/smoke", "--set", "epochs=1")
    workers = _worker_lines(out)
    assert [c["task"]["index"] for c, _ in workers] == [0, 1]
    for config, argv in workers:
        assert config["cluster"]["worker"] == ["localhost:23456", "localhost:23457"]
        assert argv == TRAIN + ["--strategy", "multi_worker"]
    assert "wait -n" in out
    bash_syntax_ok(out, tmp_path)


def test_multiworker_remote_hosts_use_ssh_and_this_hosts_name(tmp_path):
    plan = multiworker.multiworker_plan(JOB, hosts=["localhost", "gpu2"], gpus=2,
                                   this_host="head", setup=["source /venv/bin/activate"])
    (local_config, _), = _worker_lines(plan.text)
    assert local_config["cluster"]["worker"] == ["head:12345", "gpu2:12345"]
    ssh = find_command(plan.text, "ssh")
    assert ssh[:4] == ["ssh", "-o", "BatchMode=yes", "gpu2"]
    remote = ssh[4]
    assert remote.startswith(f"cd {shlex.quote(os.getcwd())} && source /venv/bin/activate && ")
    assignment, *argv = shlex.split(remote.split(" && ")[-1])
    assert json.loads(assignment.split("=", 1)[1])["task"]["index"] == 1
    assert argv == ["exec"] + TRAIN + ["--strategy", "multi_worker"]
    assert "export NCCL_DEBUG=WARN" in plan.text
    bash_syntax_ok(plan.text, tmp_path)
    with pytest.raises(LaunchError, match="host names"):
        multiworker.multiworker_plan(JOB, hosts=["a:1"])


def test_multiworker_runs_every_worker_with_its_tf_config(tmp_path):
    # Each worker writes its own file: two processes printing to one stdout may interleave
    # their lines (this test once failed on a fresh clone that way).
    code = ("import json, os, sys; config = os.environ['TF_CONFIG']; index = json.loads(config)"
            "['task']['index']; open(os.path.join(sys.argv[1], f'worker-{index}.json'), 'w')"
            ".write(config)")
    assert cli.main(["multiworker", "--np", "2", "--", sys.executable, "-c", code,
                     str(tmp_path)]) == 0
    configs = [json.loads((tmp_path / f"worker-{index}.json").read_text())
               for index in range(2)]
    assert [c["task"] for c in configs] == [{"type": "worker", "index": 0},
                                            {"type": "worker", "index": 1}]
    assert configs[0]["cluster"] == configs[1]["cluster"]
    assert len(configs[0]["cluster"]["worker"]) == 2


def test_multiworker_stops_when_a_worker_fails(capfd):
    code = ("import json, os, sys, time; i = json.loads(os.environ['TF_CONFIG'])['task']"
            "['index']; sys.exit(3) if i == 1 else time.sleep(60)")
    assert cli.main(["multiworker", "--np", "2", "--", sys.executable, "-c", code]) == 1
    assert "a worker failed; stopping the others" in capfd.readouterr().err


# === SLURM ===


@pytest.fixture
def fake_slurm(tmp_path):
    """srun, scontrol, horovodrun and hccr-train stand-ins, and a two-node allocation."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim(bin_dir, "scontrol", "assert sys.argv[1:3] == ['show', 'hostnames'], sys.argv\n"
                              "print('\\n'.join(os.environ['FAKE_NODES'].split()))")
    shim(bin_dir, "srun", (
        "args = sys.argv[1:]\n"
        "opts = []\n"
        "while args[0].startswith('--'):\n"
        "    opts.append(args.pop(0))\n"
        "cmd = args\n"
        "print('SRUN', json.dumps(opts), flush=True)\n"
        "import subprocess\n"
        "rank = 0\n"
        "for node, name in enumerate(os.environ['FAKE_NODES'].split()):\n"
        "    for local in range(int(os.environ['SLURM_NTASKS_PER_NODE'])):\n"
        "        env = dict(os.environ, SLURM_PROCID=str(rank), SLURM_LOCALID=str(local),\n"
        "                   SLURM_NODEID=str(node))\n"
        "        subprocess.run(cmd, env=env, check=True)\n"
        "        rank += 1"))
    shim(bin_dir, "hccr-train", "print('TRAIN', json.dumps({'argv': sys.argv[1:], "
                                "'procid': os.environ.get('SLURM_PROCID'), "
                                "'tf_config': os.environ.get('TF_CONFIG')}), flush=True)")
    shim(bin_dir, "horovodrun", "hostfile = sys.argv[sys.argv.index('--hostfile') + 1]\n"
                                "print('HOROVODRUN', json.dumps({'argv': sys.argv[1:], "
                                "'hostfile': open(hostfile).read()}))")

    def run_script(text: str, tasks_per_node: int):
        script = tmp_path / "job.sbatch"
        script.write_text(text)
        env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                   FAKE_NODES="node1 node2", SLURM_JOB_NODELIST="node[1-2]", SLURM_JOB_ID="42",
                   SLURM_NTASKS=str(2 * tasks_per_node),
                   SLURM_NTASKS_PER_NODE=str(tasks_per_node))
        proc = subprocess.run(["bash", str(script)], env=env, cwd=tmp_path, text=True,
                              capture_output=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        records = {}
        for line in proc.stdout.splitlines():
            tag, _, rest = line.partition(" ")
            if tag in ("SRUN", "TRAIN", "HOROVODRUN"):
                records.setdefault(tag, []).append(json.loads(rest))
        return records, proc.stdout
    return run_script


def _sbatch_options(text: str) -> dict:
    options = {}
    for line in text.splitlines():
        if line.startswith("#SBATCH --"):
            key, _, value = line[len("#SBATCH --"):].partition("=")
            options[key] = value
    return options


def test_slurm_horovod_mpi_script(capsys, fake_slurm):
    out = dry_run(capsys, "slurm", "--nodes", "2", "--gpus-per-node", "2", "--cpus-per-task",
                  "6", "--partition", "gpu", "--time", "02:00:00", "--sbatch=--qos=high",
                  "--config", "smoke", "--data", "data/chars", "--workdir", "runs/smoke",
                  "--set", "epochs=1", "--setup", "")
    assert _sbatch_options(out) == {
        "job-name": "hccr-smoke", "nodes": "2", "ntasks-per-node": "2", "gres": "gpu:2",
        "cpus-per-task": "6", "time": "02:00:00", "output": "%x-%j.out",
        "signal": "B:USR1@300", "requeue": "", "open-mode": "append", "partition": "gpu",
        "qos": "high"}
    assert "export NCCL_DEBUG=WARN" in out
    assert out.rstrip().endswith("# hccr-launch would run: sbatch hccr-smoke-horovod.sbatch")
    records, stdout = fake_slurm(out, tasks_per_node=2)
    assert records["SRUN"] == [["--mpi=pmix", "--kill-on-bad-exit=1"]]
    assert [r["procid"] for r in records["TRAIN"]] == ["0", "1", "2", "3"]
    assert all(r["argv"] == TRAIN[1:] + ["--strategy", "horovod"] for r in records["TRAIN"])
    assert "hccr: rank 3 of 4 (local rank 1)" in stdout
    assert "4 task(s) on 2 node(s): node1 node2" in stdout


def test_slurm_horovod_gloo_writes_a_hostfile_from_the_nodelist(fake_slurm):
    plan = slurm.slurm_plan(JOB, SlurmJobSpec("horovod", nodes=2, gpus_per_node=4, mpi=False,
                                              network_interface="ib0"))
    records, _ = fake_slurm(plan.text, tasks_per_node=4)
    (call,) = records["HOROVODRUN"]
    assert call["argv"] == (["-np", "8", "--hostfile", "hccr-hosts-42.txt", "--gloo",
                             "--network-interface", "ib0"] + TRAIN
                            + ["--strategy", "horovod"])
    assert call["hostfile"] == "node1 slots=4\nnode2 slots=4\n"


def test_slurm_multiworker_tf_config_per_task(fake_slurm):
    plan = slurm.slurm_plan(JOB, SlurmJobSpec("multi_worker", nodes=2, gpus_per_node=4,
                                              port=3333))
    options = _sbatch_options(plan.text)
    assert options["ntasks-per-node"] == "1" and options["gres"] == "gpu:4"
    records, _ = fake_slurm(plan.text, tasks_per_node=1)
    assert records["SRUN"] == [["--kill-on-bad-exit=1"]]
    for index, record in enumerate(records["TRAIN"]):
        assert json.loads(record["tf_config"]) == {
            "cluster": {"worker": ["node1:3333", "node2:3334"]},  # base port + task id
            "task": {"type": "worker", "index": index}}
        assert record["argv"] == TRAIN[1:] + ["--strategy", "multi_worker"]
    assert len(records["TRAIN"]) == 2
    with pytest.raises(LaunchError, match="one worker per node"):
        slurm.slurm_plan(JOB, SlurmJobSpec("multi_worker", tasks_per_node=4))


def test_slurm_submits_with_sbatch(tmp_path, monkeypatch, capfd):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim(bin_dir, "sbatch", "lines = open(sys.argv[1]).read().splitlines()\n"
                            "print('SBATCH', sys.argv[1:], "
                            "sum(line.startswith('#SBATCH --') for line in lines))")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    out = tmp_path / "keep" / "job.sbatch"
    assert cli.main(["slurm", "--config", "smoke", "--nodes", "2", "--out", str(out)]) == 0
    # job-name, nodes, ntasks-per-node, time, output, signal, requeue, open-mode
    assert f"SBATCH ['{out}'] 8" in capfd.readouterr().out
    assert out.read_text().startswith("#!/bin/bash")
    assert os.access(out, os.X_OK)


# === Kubernetes ===


def test_k8s_mpijob(capsys):
    out = dry_run(capsys, "k8s", "--nodes", "2", "--gpus-per-node", "4", "--image",
                  "registry/hccr:1", "--namespace", "ml", "--pvc", "hwdb:/data", "--config",
                  "smoke", "--data", "/data/chars", "--workdir", "/data/runs/smoke")
    manifest = yaml.safe_load(out)
    assert (manifest["apiVersion"], manifest["kind"]) == ("kubeflow.org/v2beta1", "MPIJob")
    assert manifest["metadata"]["name"] == "hccr-smoke"
    assert manifest["metadata"]["namespace"] == "ml"
    spec = manifest["spec"]
    assert spec["slotsPerWorker"] == 4
    launcher = spec["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    assert launcher["image"] == "registry/hccr:1"
    command = launcher["command"]
    assert command[:3] == ["mpirun", "-np", "8"]
    assert "NCCL_DEBUG=WARN" in command
    assert command[command.index("hccr-train"):] == [
        "hccr-train", "--config", "smoke", "--data", "/data/chars", "--workdir",
        "/data/runs/smoke", "--strategy", "horovod"]
    worker_spec = spec["mpiReplicaSpecs"]["Worker"]
    assert worker_spec["replicas"] == 2
    worker = worker_spec["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert {"name": "data-0", "mountPath": "/data"} in worker["volumeMounts"]
    volumes = worker_spec["template"]["spec"]["volumes"]
    assert {"name": "data-0", "persistentVolumeClaim": {"claimName": "hwdb"}} in volumes
    assert "# Ranks per worker pod" in out  # commented
    assert out.rstrip().endswith("kubectl apply -f hccr-smoke-mpijob.yaml")


def test_k8s_mpijob_gloo_runs_horovodrun_on_the_operator_hostfile():
    manifest = k8s.mpijob(JOB, "img", workers=3, gpus_per_node=0, mpi=False)
    launcher = manifest["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]
    assert launcher["containers"][0]["command"][:6] == [
        "horovodrun", "-np", "3", "--hostfile", "/etc/mpi/hostfile", "--gloo"]
    worker = manifest["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]
    assert "resources" not in worker["containers"][0]  # CPU job: no GPU limit
    assert "volumes" not in worker


def test_k8s_tfjob(capsys):
    out = dry_run(capsys, "k8s", "--strategy", "multi_worker", "--nodes", "3",
                  "--gpus-per-node", "2", "--image", "registry/hccr:1", "--config", "smoke",
                  "--data", "gs://b/chars", "--workdir", "gs://b/runs")
    manifest = yaml.safe_load(out)
    assert (manifest["apiVersion"], manifest["kind"]) == ("kubeflow.org/v1", "TFJob")
    worker = manifest["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 3
    container = worker["template"]["spec"]["containers"][0]
    assert container["name"] == "tensorflow"
    assert container["command"] == ["hccr-train", "--config", "smoke", "--data",
                                    "gs://b/chars", "--workdir", "gs://b/runs", "--strategy",
                                    "multi_worker"]
    assert {"name": "NCCL_DEBUG", "value": "WARN"} in container["env"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert "TF_CONFIG" in out  # the comment says the operator sets it


def test_k8s_needs_an_image_and_good_volumes():
    with pytest.raises(LaunchError, match="--image"):
        k8s.k8s_plan(JOB, image="")
    with pytest.raises(LaunchError, match="CLAIM"):
        k8s.k8s_plan(JOB, image="x", pvcs=["nopath"])
    assert dns_name("hccr", "hwdb1.1-8GPU") == "hccr-hwdb1-1-8gpu"


def test_k8s_applies_with_kubectl(tmp_path, monkeypatch, capfd):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim(bin_dir, "kubectl", "print('KUBECTL', sys.argv[1:3], "
                             "open(sys.argv[3]).read().count('kind: TFJob'))")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    assert cli.main(["k8s", "--strategy", "multi_worker", "--image", "x", "--config",
                     "smoke"]) == 0
    assert "KUBECTL ['apply', '-f'] 1" in capfd.readouterr().out


# === Beam ===


def test_beam_dataflow(capsys, tmp_path):
    out = dry_run(capsys, "beam", "dataflow", "--input", "gs://b/trn/*.gnt", "--input",
                  "gs://b/tst/*.gnt", "--output", "gs://b/hwdb11", "--project", "p1",
                  "--region", "europe-west4", "--temp-location", "gs://b/tmp",
                  "--max-num-workers", "20", "--", "--image-size", "64")
    assert find_command(out, "hccr-preprocess") == [
        "hccr-preprocess", "--input", "gs://b/trn/*.gnt", "--input", "gs://b/tst/*.gnt",
        "--output", "gs://b/hwdb11", "--runner", "DataflowRunner", "--project", "p1",
        "--region", "europe-west4", "--temp_location", "gs://b/tmp", "--job_name",
        "hccr-preprocess-hwdb11", "--setup_file", beam.REPO_SETUP, "--max_num_workers", "20",
        "--image-size", "64"]
    bash_syntax_ok(out, tmp_path)
    with pytest.raises(LaunchError, match="gs://"):
        beam.beam_plan(BeamJobSpec("dataflow", ["data/*.gnt"], "out", project="p", region="r",
                                   temp_location="gs://b/t"))
    with pytest.raises(LaunchError, match="--project"):
        beam.beam_plan(BeamJobSpec("dataflow", ["gs://b/*.gnt"], "gs://b/o"))
    plan = beam.beam_plan(BeamJobSpec("dataflow", ["gs://b/*.gnt"], "gs://b/o", project="p",
                                      region="r", temp_location="gs://b/t",
                                      image="gcr.io/p/hccr-beam"))
    assert find_command(plan.text, "hccr-preprocess")[-2:] == ["--sdk_container_image",
                                                               "gcr.io/p/hccr-beam"]
    assert Requirement("module", "apitools", plan.requires[1].why) in plan.requires


def test_beam_flink_and_spark(capsys):
    out = dry_run(capsys, "beam", "flink", "--input", "/shared/*.gnt", "--output",
                  "/shared/out", "--task", "chars", "--flink-master", "jm:8081", "--image",
                  "reg/hccr-beam:1", "--parallelism", "16")
    assert find_command(out, "hccr-preprocess")[5:] == [
        "--task", "chars", "--runner", "FlinkRunner", "--flink_master", "jm:8081",
        "--environment_type", "DOCKER", "--environment_config", "reg/hccr-beam:1",
        "--parallelism", "16"]
    plan = beam.beam_plan(BeamJobSpec("spark", ["/s/*.gnt"], "/s/out", spark_master="m",
                                      worker_pool="localhost:50000"))
    assert find_command(plan.text, "hccr-preprocess")[5:] == [
        "--runner", "SparkRunner", "--spark_master_url", "spark://m", "--environment_type",
        "EXTERNAL", "--environment_config", "localhost:50000"]
    assert [(r.kind, r.name) for r in plan.requires] == [
        ("program", "hccr-preprocess"), ("program", "java"), ("endpoint", "m:7077")]
    with pytest.raises(LaunchError, match="--image"):
        beam.beam_plan(BeamJobSpec("flink", ["/s/*.gnt"], "/s/out", environment_type="DOCKER"))
    direct = beam.beam_plan(BeamJobSpec("direct", ["d/*.gnt"], "out", num_workers=2))
    assert find_command(direct.text, "hccr-preprocess")[5:] == [
        "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]


# === Missing tools and requirements ===


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_requirements_are_checked_by_name(tmp_path):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert submit.missing([Requirement("endpoint", f"127.0.0.1:{port}", "x")]) == []
    problems = submit.missing([
        Requirement("program", "no-such-tool-hccr", "needed to submit"),
        Requirement("module", "no_such_module_hccr", "pip install it"),
        Requirement("endpoint", f"127.0.0.1:{_closed_port()}", "the master"),
        Requirement("program", "python", "found next to this interpreter")], timeout=1)
    assert len(problems) == 3
    assert problems[0] == "`no-such-tool-hccr` not found on PATH: needed to submit"
    assert "no_such_module_hccr" in problems[1] and "not reachable" in problems[2]


@pytest.mark.parametrize("argv, tool", [
    (["slurm", "--config", "smoke"], "`sbatch` not found"),
    (["k8s", "--config", "smoke", "--image", "x"], "`kubectl` not found"),
    (["local", "--mpi", "--config", "smoke"], "`mpirun` not found"),
])
def test_missing_cluster_tools_fail_with_their_name(argv, tool, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert tool in err and err.startswith("hccr-launch: error: cannot run")


def test_out_keeps_the_dry_run_text(tmp_path, capsys):
    path = tmp_path / "job.sh"
    out = dry_run(capsys, "local", "--config", "smoke", "--out", str(path))
    assert out == path.read_text().rstrip("\n") + f"\n\n# hccr-launch would run: bash {path}\n"
    assert "--dry-run" not in path.read_text()  # the recorded command re-renders and runs
    assert os.access(path, os.X_OK)


# === The local horovodrun path, for real ===


def skip_without_horovod() -> None:
    """Skips a test that runs horovodrun where Horovod is not installed: scripts/setup_env.sh
    with HCCR_SKIP_HOROVOD=1 (every feature but `--strategy horovod` works)."""
    pytest.importorskip("horovod", reason="Horovod is not installed (HCCR_SKIP_HOROVOD=1?)")
    if shutil.which("horovodrun", path=submit.search_path()) is None:
        pytest.skip("horovodrun is not on the PATH (HCCR_SKIP_HOROVOD=1?)")


def test_local_horovodrun_runs_two_ranks(tmp_path):
    skip_without_horovod()
    # One file per rank, not horovodrun's merged stdout (whose lines can interleave).
    code = ("import os, sys; rank = os.environ['HOROVOD_RANK']; open(os.path.join(sys.argv[1], "
            "'rank-' + rank), 'w').write(rank + ' ' + os.environ['HOROVOD_SIZE'])")
    assert cli.main(["local", "--np", "2", "--", "python", "-c", code, str(tmp_path)]) == 0
    assert [(tmp_path / f"rank-{r}").read_text() for r in range(2)] == ["0 2", "1 2"]


@pytest.mark.slow
def test_local_horovodrun_trains_the_smoke_config(tmp_path, capfd):
    """The real thing: `hccr-launch local --np 2 --config smoke` trains with two Horovod
    ranks over Gloo (about 40 s on two shared cores)."""
    skip_without_horovod()
    if shutil.which("hccr-train", path=submit.search_path()) is None:
        pytest.skip("hccr-train is not installed (pip install -e .)")
    from tests import tiny_data
    data = tiny_data.write_chars(tmp_path / "chars", num_classes=4, image_size=32)
    workdir = tmp_path / "run"
    assert cli.main(["local", "--np", "2", "--config", "smoke", "--data", data, "--workdir",
                     str(workdir), "--set", "epochs=1"]) == 0
    out = capfd.readouterr().out
    # Each rank's JSON line, found wherever it starts: horovodrun merges the ranks' output,
    # and one rank's line may begin on the same line as the other's.
    decoder = json.JSONDecoder()
    results = {}
    for rank in ("0", "1"):
        start = out.find(f"[{rank}]<stdout>:{{")
        assert start >= 0, out[-3000:]
        results[rank] = decoder.raw_decode(out, start + len(f"[{rank}]<stdout>:"))[0]
    results = list(results.values())
    assert len(results) == 2
    assert all(r["strategy"] == "horovod" and r["num_replicas"] == 2 for r in results)
    assert (workdir / "final.keras").exists()


# === Control characters never reach a script or manifest ===

NEWLINE_VALUE = "runs/x\ntouch /tmp/pwned"


@pytest.mark.parametrize("argv", [
    ["local", "--config", "smoke", "--data", "d", "--workdir", NEWLINE_VALUE],
    ["slurm", "--config", "smoke", "--data", "d", "--workdir", "w", "--partition",
     "gpu\nrm -rf ~"],
    ["slurm", "--config", "smoke", "--data", "d", "--workdir", "w", "--sbatch=--qos=high\necho"],
    ["k8s", "--image", "img", "--config", "smoke", "--data", "d", "--workdir", "w",
     "--namespace", "ns\nkind: Secret"],
    ["k8s", "--image", "img\r", "--config", "smoke", "--data", "d", "--workdir", "w"],
    ["local", "--config", "smoke", "--data", "d", "--workdir", "w", "--set", "epochs=1\x00"],
    ["local", "--", "python", "-c", "print(1)\nprint(2)"],
])
def test_control_characters_are_refused_before_rendering(argv, capsys, tmp_path):
    out = tmp_path / "job.txt"
    assert cli.main(argv + ["--dry-run", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not out.exists()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "contains the control character" in err, err


def test_every_renderer_refuses_control_characters_itself():
    bad = TrainJob(config="smoke", data="data/chars", workdir=NEWLINE_VALUE)
    with pytest.raises(LaunchError, match=r"argument 'runs/x\\ntouch /tmp/pwned' contains the "
                                          r"control character '\\n' at position 6"):
        horovod.local_plan(bad, 2, False, 0)
    with pytest.raises(LaunchError, match="contains the control character"):
        slurm.slurm_plan(bad)
    with pytest.raises(LaunchError, match="--partition 'a\\\\nb' contains"):
        slurm.slurm_plan(JOB, SlurmJobSpec(partition="a\nb"))
    with pytest.raises(LaunchError, match="the command line"):
        horovod.local_plan(JOB, 2, False, 0, origin="hccr-launch local\nrm -rf ~")
    with pytest.raises(LaunchError, match="manifest.metadata.namespace 'ns\\\\nx' contains"):
        k8s.k8s_plan(JOB, "img", namespace="ns\nx")
    with pytest.raises(LaunchError, match="contains the control character"):
        k8s.k8s_plan(bad, "img", strategy="multi_worker")
    with pytest.raises(LaunchError, match="--setup line"):
        horovod.local_plan(JOB, 2, False, 0, setup=["module load x\u2028rm -rf ~"])
    # Printable values, spaces and quotes included, still render and stay quoted.
    plan = horovod.local_plan(TrainJob(config="smoke", data="my data/it's", workdir="w"), 2,
                              False, 0)
    assert "'my data/it'\"'\"'s'" in plan.text
