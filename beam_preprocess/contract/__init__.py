"""The data contract every stage shares: what a CASIA file holds and what a shard holds.

CASIA formats (`gnt`, `dgrl`, their one error type in `errors`), charsets (`charset`), image
normalisation (`imaging`), the record schema and its codec (`schema`), TFRecord
framing (`tfrecords`), `metadata.json` (`metadata`) and file access (`fileio`, `tfio`).
Preprocessing writes through these modules; training, evaluation, export and prediction read
through them. Nothing here imports Apache Beam.
"""
