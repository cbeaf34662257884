"""CASIA-HWDB formats, charsets, synthetic handwriting and the Beam preprocessing job."""
import hashlib as _hashlib
import pathlib as _pathlib

# The package's source as this process imported it: long-lived workers (Dask) that imported an
# older version would write different bytes, so the job compares theirs with the driver's.
SOURCE_SHA256 = _hashlib.sha256(b"".join(
    p.read_bytes() for p in sorted(_pathlib.Path(__file__).parent.glob("*.py")))).hexdigest()
