"""A real SLURM cluster on this machine for tests: munged, slurmctld and one or two slurmd,
all from a temporary directory, torn down by pid.

    with SlurmCluster(nodes=2) as cluster:
        job_id = cluster.sbatch("job.sbatch", cwd=workdir)
        state = cluster.wait(job_id)          # {"JobState": "COMPLETED", "ExitCode": "0:0", ...}

Facts this relies on (measured on Debian 12's slurm-wlm 22.05):
- SlurmctldHost must be the short host name; node names must resolve, so the two nodes of a
  two-node cluster are this host's short name and `localhost`, both at 127.0.0.1, each slurmd
  started with `-N NAME` on its own port.
- munged's socket directory, and every directory above it, must be searchable by everyone:
  it gets its own mkdtemp under /tmp (pytest's 0700 temporary directories fail).
- `sacct` needs slurmdbd: job states come from `scontrol show job ID -o`.
- Two slurmd on one host collide in PMIx's per-step directory, so `srun --mpi=pmix` needs
  a one-node cluster; workers on the two "nodes" share this host's ports.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
# (program, Debian package) the cluster needs.
PROGRAMS = (("munged", "munge"), ("mungekey", "munge"), ("slurmctld", "slurmctld"),
            ("slurmd", "slurmd"), ("sbatch", "slurm-client"), ("scontrol", "slurm-client"))
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                "BOOT_FAIL", "DEADLINE", "PREEMPTED")


class ClusterUnavailable(RuntimeError):
    """SLURM cannot run here; the message says what is missing (tests skip with it)."""


def _which(program: str) -> str | None:
    return shutil.which(program, path=os.pathsep.join(
        [os.environ.get("PATH", ""), *SBIN]))


def unavailable() -> str | None:
    """Why a cluster cannot start on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "the SLURM test cluster runs slurmd as root (tests run as a regular user)"
    missing = sorted({package for program, package in PROGRAMS if _which(program) is None})
    if missing:
        return (f"SLURM/munge not installed (missing Debian package(s): {', '.join(missing)}; "
                "bash scripts/setup_env.sh installs them as root)")
    return None


def _free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


class SlurmCluster:
    """munged + slurmctld + `nodes` slurmd (1 or 2), each node with `cpus` CPUs.

    Attributes:
      node_names: the nodes, in SLURM's order.
      env: the environment that talks to this cluster (SLURM_CONF, PATH with sbin).
    """

    def __init__(self, nodes: int = 1, cpus: int = 2, start_timeout: float = 30.0):
        if nodes not in (1, 2):
            raise ValueError(f"nodes must be 1 or 2 (two slurmd per host at most here). "
                             f"Received: {nodes}")
        self.host = socket.gethostname().split(".")[0]
        self.node_names = [self.host, "localhost"][:nodes]
        self.cpus = cpus
        self.start_timeout = start_timeout
        self.root = ""
        self.munge_dir = ""
        self.processes: list[subprocess.Popen] = []
        self.env: dict[str, str] = {}

    # === Start and stop ===

    def __enter__(self) -> SlurmCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        why = unavailable()
        if why:
            raise ClusterUnavailable(why)
        self.root = tempfile.mkdtemp(prefix="hccr-slurm-")
        self.munge_dir = tempfile.mkdtemp(prefix="hccr-munge-")
        os.chmod(self.root, 0o755)
        os.chmod(self.munge_dir, 0o755)
        for sub in ("state", "log", "run"):
            os.makedirs(os.path.join(self.root, sub))
        socket_path = os.path.join(self.munge_dir, "munge.socket")
        key = os.path.join(self.munge_dir, "munge.key")
        subprocess.run([_which("mungekey"), "--create", "--keyfile", key], check=True,
                       capture_output=True)
        os.chmod(key, 0o600)
        self._spawn("munged", [_which("munged"), "--foreground", "--force",
                               f"--socket={socket_path}", f"--key-file={key}",
                               f"--pid-file={self.munge_dir}/munged.pid",
                               f"--log-file={self.munge_dir}/munged.log",
                               f"--seed-file={self.munge_dir}/munged.seed"])
        self._wait_for(lambda: os.path.exists(socket_path), "munged's socket")

        ctld_port, *node_ports = _free_ports(1 + len(self.node_names))
        conf = os.path.join(self.root, "slurm.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(self._conf(socket_path, ctld_port, node_ports))
        self.env = dict(os.environ, SLURM_CONF=conf,
                        PATH=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-f", conf])
        self._wait_for(lambda: self._scontrol_ok(), "slurmctld to answer")
        for name in self.node_names:
            self._spawn(f"slurmd {name}", [_which("slurmd"), "-D", "-f", conf, "-N", name])
        self._wait_for(self._nodes_idle, f"node(s) {','.join(self.node_names)} to be idle")

    def _cluster_processes(self) -> list[tuple[int, str]]:
        """(pid, command line) of every live process of this cluster: slurmstepd and the jobs'
        processes carry this cluster's SLURM_CONF in their environment (slurmd starts
        slurmstepd in a session of its own, so the daemons' pids do not reach them)."""
        if not self.env:
            return []
        marker = f"SLURM_CONF={self.env['SLURM_CONF']}".encode()
        daemons = {process.pid for process in self.processes} | {os.getpid()}
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in daemons:
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if marker not in f.read().split(b"\0"):
                        continue
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            # Not a zombie, nor slurmctld's own helper (slurmscriptd ends with slurmctld).
            if command and not command.startswith("slurmctld"):
                found.append((int(entry), command))
        return found

    def stop(self) -> None:
        """Cancels every job, stops the daemons (by pid, newest first), then kills whatever
        of the jobs is left (slurmstepd and its tasks, found by this cluster's SLURM_CONF)."""
        if self.env and self.processes and self.processes[-1].poll() is None:
            subprocess.run(["scancel", "--full", "--user", "root"], env=self.env,
                           capture_output=True, check=False)
            deadline = time.monotonic() + 10
            while self._cluster_processes() and time.monotonic() < deadline:
                time.sleep(0.2)
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for pid, _ in self._cluster_processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.processes = []
        for directory in (self.root, self.munge_dir):
            if directory:
                shutil.rmtree(directory, ignore_errors=True)

    def _conf(self, munge_socket: str, ctld_port: int, node_ports: list[int]) -> str:
        root = self.root
        lines = [
            "ClusterName=hccrtest",
            f"SlurmctldHost={self.host}",
            f"SlurmctldPort={ctld_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={munge_socket}",
            f"StateSaveLocation={root}/state",
            f"SlurmdSpoolDir={root}/run/slurmd-%n",
            f"SlurmctldPidFile={root}/run/slurmctld.pid",
            f"SlurmdPidFile={root}/run/slurmd-%n.pid",
            f"SlurmctldLogFile={root}/log/slurmctld.log",
            f"SlurmdLogFile={root}/log/slurmd-%n.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={root}/log/jobcomp.txt",
            "MpiDefault=none",
            "ReturnToService=2",
            # A node's CPUs as configured here, not as detected (both nodes share two cores).
            "SlurmdParameters=config_overrides",
            "SchedulerParameters=sched_interval=1",
            "SlurmctldTimeout=30",
            "InactiveLimit=0",
            "KillWait=5",
            "MinJobAge=600",
        ]
        for name, port in zip(self.node_names, node_ports, strict=True):
            lines.append(f"NodeName={name} NodeAddr=127.0.0.1 Port={port} CPUs={self.cpus} "
                         "State=UNKNOWN")
        lines.append(f"PartitionName=debug Nodes={','.join(self.node_names)} Default=YES "
                     "MaxTime=INFINITE State=UP")
        return "\n".join(lines) + "\n"

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(os.path.join(self.root or self.munge_dir, f"{name.replace(' ', '-')}.out"),
                   "wb")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                   env=self.env or None, start_new_session=True)
        log.close()
        process.name = name
        self.processes.append(process)

    def _wait_for(self, ready, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise ClusterUnavailable(f"{process.name} exited with {process.returncode} "
                                             f"while waiting for {what}: {self.logs()}")
            if ready():
                return
            time.sleep(0.2)
        raise ClusterUnavailable(f"timed out after {self.start_timeout:.0f} s waiting for "
                                 f"{what}: {self.logs()}")

    def _scontrol_ok(self) -> bool:
        return subprocess.run(["scontrol", "ping"], env=self.env, capture_output=True,
                              check=False).returncode == 0

    def _nodes_idle(self) -> bool:
        out = self.scontrol("show", "node", "-o", check=False)
        states = [field.split("=", 1)[1] for line in out.splitlines()
                  for field in line.split() if field.startswith("State=")]
        return len(states) == len(self.node_names) and all(s.startswith("IDLE")
                                                           for s in states)

    def logs(self, tail: int = 1500) -> str:
        """The last lines of every daemon's log (for failure messages)."""
        parts = []
        for directory in (self.munge_dir, self.root, os.path.join(self.root, "log")):
            if not directory or not os.path.isdir(directory):
                continue
            for name in sorted(os.listdir(directory)):
                path = os.path.join(directory, name)
                if name.endswith((".out", ".log")) and os.path.isfile(path):
                    with open(path, errors="replace") as f:
                        parts.append(f"--- {name}:\n{f.read()[-tail:]}")
        return "\n".join(parts)

    # === Jobs ===

    def scontrol(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(["scontrol", *args], env=self.env, capture_output=True,
                                text=True, check=False)
        if check and result.returncode:
            raise RuntimeError(f"scontrol {shlex.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def sbatch(self, script: str, cwd: str, *options: str, env: dict | None = None) -> int:
        """Submits `script` from `cwd`; returns the job id."""
        result = subprocess.run(["sbatch", "--parsable", *options, script], cwd=cwd,
                                env=dict(self.env, **(env or {})), capture_output=True,
                                text=True, check=False)
        if result.returncode:
            raise RuntimeError(f"sbatch {script} failed: {result.stderr.strip()}")
        return int(result.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job ID -o` as a dict (JobState, ExitCode, Restarts, StdOut, ...)."""
        out = self.scontrol("show", "job", str(job_id), "-o")
        fields = {}
        for word in out.split():
            key, sep, value = word.partition("=")
            if sep:
                fields[key] = value
        return fields

    def start_requeued_now(self, job_id: int, restarts: int, timeout: float = 120.0) -> None:
        """Waits until a requeue put the job back in the queue for the `restarts`-th time and
        lets it start at once: SLURM holds a requeued job for about two minutes (its
        BeginTime), a wait that only slows tests down. (On its way back a job passes through
        COMPLETING and may show FAILED for a moment: only PENDING means it is queued again.)"""
        self.wait(job_id, timeout, until=lambda f: int(f.get("Restarts", 0)) >= restarts
                  and f.get("JobState") == "PENDING")
        # The killed run's slurmstepd must be gone first: its PMIx socket (named after the
        # job and step ids, which a requeued job reuses) is removed only when it exits.
        deadline = time.monotonic() + timeout
        stepd = f"slurmstepd: [{job_id}."
        while any(command.startswith(stepd) for _, command in self._cluster_processes()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id}'s old slurmstepd still runs: {self.logs()}")
            time.sleep(0.2)
        self.scontrol("update", f"JobId={job_id}", "StartTime=now")

    def wait(self, job_id: int, timeout: float = 300.0, until=None) -> dict[str, str]:
        """Polls the job until it reaches a final state (or `until(fields)` is true)."""
        deadline = time.monotonic() + timeout
        while True:
            fields = self.job(job_id)
            if (until(fields) if until else fields.get("JobState") in FINAL_STATES):
                return fields
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {fields.get('JobState')} after "
                                   f"{timeout:.0f} s: {self.logs()}")
            time.sleep(0.5)
