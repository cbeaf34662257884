"""CASIA-HWDB formats, charsets, synthetic handwriting and the Beam preprocessing job."""
