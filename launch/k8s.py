"""Renders Kubernetes manifests for the Kubeflow operators: an `MPIJob` (kubeflow.org/v2beta1,
the MPI Operator) for Horovod, a `TFJob` (kubeflow.org/v1, the Training Operator) for
MultiWorkerMirroredStrategy.

`mpijob()` and `tfjob()` return the manifest as a dict; `k8s_plan()` writes it as commented
YAML submitted with `kubectl apply -f FILE`.
"""
from __future__ import annotations

from collections.abc import Sequence

import yaml

from launch.errors import LaunchError
from launch.nccl import nccl_env
from launch.plan import (
    FILE,
    Plan,
    Requirement,
    check_printable,
    comments,
    dns_name,
    file_stem,
    image_build_command,
)
from launch.train_job import TrainJob

STRATEGIES = ("horovod", "multi_worker")
HOSTFILE = "/etc/mpi/hostfile"  # where the MPI Operator mounts the worker list
GPU_RESOURCE = "nvidia.com/gpu"


def parse_volume(text: str) -> tuple[str, str]:
    """`CLAIM:/mount/path` -> (claim, path)."""
    claim, sep, path = text.partition(":")
    if not claim or not sep or not path.startswith("/"):
        raise LaunchError(f"--pvc takes CLAIM:/mount/path; Received: {text!r}")
    return claim, path


def _pod_volumes(pvcs: Sequence[str], shm: bool) -> tuple[list, list]:
    volumes, mounts = [], []
    for number, text in enumerate(pvcs):
        claim, path = parse_volume(text)
        name = dns_name("data", str(number))
        volumes.append({"name": name, "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": name, "mountPath": path})
    if shm:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return volumes, mounts


def _container(name: str, image: str, argv: Sequence[str], gpus: int, env: dict,
               mounts: list, resources: dict | None = None) -> dict:
    container = {"name": name, "image": image, "command": list(argv)}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    if resources is not None:
        container["resources"] = resources
    elif gpus:
        container["resources"] = {"limits": {GPU_RESOURCE: gpus}}
    if mounts:
        container["volumeMounts"] = mounts
    return container


def _pod(container: dict, volumes: list) -> dict:
    spec = {"containers": [container]}
    if volumes:
        spec["volumes"] = volumes
    return {"spec": spec}


def _metadata(name: str, namespace: str, job: TrainJob) -> dict:
    labels = {"app.kubernetes.io/name": "hccr", "hccr/config": dns_name(job.name)}
    return {"name": name, "namespace": namespace, "labels": labels}


def mpijob(job: TrainJob, image: str, workers: int = 1, gpus_per_node: int = 0,
           slots_per_worker: int | None = None, namespace: str = "default",
           name: str | None = None, mpi: bool = True, network_interface: str | None = None,
           pvcs: Sequence[str] = ()) -> dict:
    """A Kubeflow MPIJob: a launcher pod runs `mpirun` (or `horovodrun --gloo`) over the
    worker pods listed in the operator's hostfile; one rank per slot."""
    slots = slots_per_worker or max(gpus_per_node, 1)
    np = workers * slots
    argv = job.argv("horovod")
    env = nccl_env(network_interface) if gpus_per_node else {}
    if mpi:
        launch = ["mpirun", "-np", str(np), "--allow-run-as-root", "-bind-to", "none",
                  "-map-by", "slot"]
        for key, value in env.items():
            launch += ["-x", f"{key}={value}"]
        launch += ["-x", "LD_LIBRARY_PATH", "-x", "PATH", "-mca", "pml", "ob1", "-mca", "btl",
                   "^openib"]
    else:
        launch = ["horovodrun", "-np", str(np), "--hostfile", HOSTFILE, "--gloo"]
        if network_interface:
            launch += ["--network-interface", network_interface]
    volumes, mounts = _pod_volumes(pvcs, shm=bool(gpus_per_node))
    launcher = _container("launcher", image, launch + argv, 0, {} if mpi else env, [],
                          resources={"limits": {"cpu": "1", "memory": "2Gi"}})
    # Workers run sshd in the foreground; the launcher starts the ranks in them over ssh,
    # exporting the NCCL settings itself (-x, or horovodrun's forwarding).
    worker = _container("worker", image, ["/usr/sbin/sshd", "-De"], gpus_per_node, {}, mounts)
    return {
        "apiVersion": "kubeflow.org/v2beta1",
        "kind": "MPIJob",
        "metadata": _metadata(name or dns_name("hccr", job.name), namespace, job),
        "spec": {
            "slotsPerWorker": slots,
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 3},
            "mpiImplementation": "OpenMPI",
            "mpiReplicaSpecs": {
                "Launcher": {"replicas": 1, "template": _pod(launcher, [])},
                "Worker": {"replicas": workers, "template": _pod(worker, volumes)},
            },
        },
    }


def tfjob(job: TrainJob, image: str, workers: int = 1, gpus_per_node: int = 0,
          namespace: str = "default", name: str | None = None,
          network_interface: str | None = None, pvcs: Sequence[str] = ()) -> dict:
    """A Kubeflow TFJob of `workers` Worker replicas; the operator sets each pod's TF_CONFIG."""
    env = nccl_env(network_interface) if gpus_per_node else {}
    volumes, mounts = _pod_volumes(pvcs, shm=bool(gpus_per_node))
    # The Training Operator finds the TensorFlow container by its name: "tensorflow".
    container = _container("tensorflow", image, job.argv("multi_worker"), gpus_per_node, env,
                           mounts)
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "TFJob",
        "metadata": _metadata(name or dns_name("hccr", job.name), namespace, job),
        "spec": {
            "runPolicy": {"cleanPodPolicy": "None", "backoffLimit": 3},
            "tfReplicaSpecs": {
                "Worker": {"replicas": workers, "restartPolicy": "OnFailure",
                           "template": _pod(container, volumes)},
            },
        },
    }


# === YAML with comments ===

# (key, comment): a comment goes above the first line that is `key` or starts with `key:`
# (after indentation); a repeated key takes its comments in order; a missing one is skipped.
_COMMON_NOTES = [
    ("runPolicy", "cleanPodPolicy: which pods are deleted when the job ends; backoffLimit: "
                  "retries."),
]
MPIJOB_NOTES = [
    ("apiVersion", "The MPI Operator's resource (kubeflow.org/v2beta1; the operator must be "
                   "installed)."),
    ("slotsPerWorker", "Ranks per worker pod (one per GPU); the launcher's -np is workers x "
                       "slots."),
    *_COMMON_NOTES,
    ("mpiImplementation", "The MPI in the image: OpenMPI, Intel or MPICH."),
    ("Launcher", f"One pod that starts every rank: mpirun (or horovodrun) reaches the workers "
                 f"listed in {HOSTFILE} (mounted by the operator) over ssh. It needs no GPU."),
    ("command", "mpirun -np workers x slots, one rank per slot; -x exports a variable to "
                "every rank (processes started over ssh do not see the pod's env). Then the "
                "training command: its paths must exist in the pods (a --pvc volume) or be "
                "gs:// / s3:// URLs."),
    ("env", "NCCL settings, which horovodrun forwards to every rank: WARN reports problems "
            "only; NCCL_SOCKET_IFNAME picks the network interface."),
    ("resources", "The launcher only starts and watches processes."),
    ("Worker", "The pods that run the ranks. They run sshd (the image needs it; the operator "
               "creates the keys); the launcher starts the training processes in them."),
    ("resources", "GPUs per pod (the NVIDIA device plugin's nvidia.com/gpu)."),
    ("volumes", "Data and workdir volumes; /dev/shm in memory for NCCL (a container's default "
                "64 MB is too small)."),
]
TFJOB_NOTES = [
    ("apiVersion", "The Training Operator's resource (kubeflow.org/v1; the operator must be "
                   "installed)."),
    *_COMMON_NOTES,
    ("tfReplicaSpecs", "MultiWorkerMirroredStrategy needs only workers; worker 0 is the chief. "
                       "The operator sets TF_CONFIG (the cluster and the pod's own index) in "
                       "every pod."),
    ("Worker", "Worker pods: one MultiWorkerMirroredStrategy worker each, using all of the "
               "pod's GPUs."),
    ("restartPolicy", "Restart a failed worker; hccr-train resumes from the last checkpoint "
                      "in --workdir."),
    ("name: tensorflow", "The operator finds the TensorFlow container by this name."),
    ("command", "The training command: its paths must exist in the pod (a --pvc volume) or be "
                "gs:// / s3:// URLs."),
    ("env", "NCCL settings: WARN reports problems only; NCCL_SOCKET_IFNAME picks the network "
            "interface."),
    ("resources", "GPUs per pod (the NVIDIA device plugin's nvidia.com/gpu)."),
    ("volumes", "Data and workdir volumes; /dev/shm in memory for NCCL (a container's default "
                "64 MB is too small)."),
]


def _check_strings(value, where: str) -> None:
    """Every string in a nested manifest (keys and values) must be printable."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_printable(key, f"{where} key")
            _check_strings(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_strings(item, where)
    elif isinstance(value, str):
        check_printable(value, where)


def to_yaml(manifest: dict, header: Sequence[str] = (),
            notes: Sequence[tuple[str, str]] = ()) -> str:
    """The manifest as YAML, each part preceded by a comment saying what it is for.

    Raises:
      LaunchError: a key or value of the manifest, or a header line, holds a control
        character (a newline would otherwise add YAML keys or end a comment).
    """
    _check_strings(manifest, "manifest")
    for note in header:
        check_printable(note, "header line")
    text = yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False, width=1000)
    out = []
    for note in header:  # the command that generated it stays on one line
        out += [f"# {note}"] if note.startswith("Generated by:") else comments(note)
    pending = list(notes)
    for line in text.splitlines():
        stripped = line.lstrip(" -")
        for number, (key, note) in enumerate(pending):
            if stripped == key or stripped.startswith(key + ":"):
                indent = " " * (len(line) - len(line.lstrip(" ")))
                out += comments(note, indent)
                del pending[number]
                break
        out.append(line)
    return "\n".join(out) + "\n"


def k8s_plan(job: TrainJob, image: str, strategy: str = "horovod", workers: int = 1,
             gpus_per_node: int = 0, slots_per_worker: int | None = None,
             namespace: str = "default", name: str | None = None, mpi: bool = True,
             network_interface: str | None = None, pvcs: Sequence[str] = (),
             origin: str | None = None) -> Plan:
    """The MPIJob (horovod) or TFJob (multi_worker) manifest, applied with kubectl."""
    if strategy not in STRATEGIES:
        raise LaunchError(f"k8s --strategy must be one of {', '.join(STRATEGIES)}; "
                          f"Received: {strategy!r}")
    if not image:
        raise LaunchError("k8s needs --image: a container image with hccr installed "
                          "(and Horovod with MPI/ssh for an MPIJob); build one with "
                          f"`{image_build_command()}`")
    if workers < 1:
        raise LaunchError(f"--nodes must be >= 1; Received: {workers}")
    if strategy == "horovod":
        manifest = mpijob(job, image, workers, gpus_per_node, slots_per_worker, namespace, name,
                          mpi, network_interface, pvcs)
        what = (f"Kubeflow MPIJob: Horovod training of {job.what} on {workers} worker pod(s) "
                f"x {manifest['spec']['slotsPerWorker']} slot(s).")
        operator = "the MPI Operator (github.com/kubeflow/mpi-operator, v2beta1 API)"
    else:
        manifest = tfjob(job, image, workers, gpus_per_node, namespace, name,
                         network_interface, pvcs)
        what = (f"Kubeflow TFJob: MultiWorkerMirroredStrategy training of {job.what} on "
                f"{workers} worker pod(s).")
        operator = "the Kubeflow Training Operator (kubeflow.org/v1 TFJob)"
    kind, meta = manifest["kind"], manifest["metadata"]
    lines = [f"hccr-launch k8s: {what}"]
    if origin:
        lines.append(f"Generated by: {origin}")
    lines += [f"Needs {operator} in the cluster, and the image {image}: build it from",
              f"a checkout with `{image_build_command(image)}` and push it.",
              f"Submit: kubectl apply -f FILE; watch: kubectl get {kind.lower()} "
              f"{meta['name']} -n {meta['namespace']};",
              f"logs: kubectl logs -n {meta['namespace']} -l "
              f"training.kubeflow.org/job-name={meta['name']} -f. Keep it and edit it."]
    requires = (Requirement("program", "kubectl",
                            "kubectl applies the manifest: install it and point it at the "
                            "cluster, or keep the manifest (--dry-run --out FILE) and apply it "
                            "where kubectl is"),)
    notes = MPIJOB_NOTES if kind == "MPIJob" else TFJOB_NOTES
    return Plan("k8s", to_yaml(manifest, lines, notes),
                file_stem("hccr", job.name, kind.lower()) + ".yaml",
                ("kubectl", "apply", "-f", FILE), requires)
