"""Everything before training, in three parts that import only downwards:

- `beam_preprocess.contract`: the data contract shared with training and serving (CASIA
  formats, charsets, image normalisation, record schema and codec, metadata);
- `beam_preprocess.job`: the Apache Beam job (`hccr-preprocess`) over that contract;
- `beam_preprocess.synthetic`: font-rendered synthetic writers (`hccr-synth`).

`cli_errors` and `progress` are the plumbing every `hccr-*` command shares.
"""
import hashlib as _hashlib
import pathlib as _pathlib

# The package's source as this process imported it: long-lived workers (Dask) that imported an
# older version would write different bytes, so the job compares theirs with the driver's.
SOURCE_SHA256 = _hashlib.sha256(b"".join(
    p.read_bytes() for p in sorted(_pathlib.Path(__file__).parent.rglob("*.py")))).hexdigest()
