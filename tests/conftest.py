import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_SAMPLE = REPO.parent / "shared" / "data" / "casia-hwdb-sample"


@pytest.fixture
def casia_sample_dir():
    """The shared real CASIA-HWDB sample; tests using it skip cleanly where it is absent."""
    if not (SHARED_SAMPLE / "train-0000.gnt").exists():
        pytest.skip(f"real CASIA sample not present at {SHARED_SAMPLE}")
    return SHARED_SAMPLE


@pytest.fixture
def slurm_cluster():
    """`slurm_cluster(nodes=1)` starts a real SLURM cluster on this machine (munged, slurmctld
    and one or two slurmd from a temporary directory, see tests/slurm_cluster.py) and returns
    it; every cluster started is torn down by pid after the test. Skips, naming the missing
    package, where SLURM or munge is not installed or the tests do not run as root."""
    from tests import slurm_cluster as cluster_lib
    why = cluster_lib.unavailable()
    if why:
        pytest.skip(why)
    started = []

    def start(nodes: int = 1, cpus: int = 2):
        cluster = cluster_lib.SlurmCluster(nodes=nodes, cpus=cpus)
        started.append(cluster)
        cluster.start()
        return cluster

    yield start
    for cluster in started:
        cluster.stop()
