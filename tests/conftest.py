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
