"""Launchers: the end-to-end demo and cluster jobs (horovodrun, SLURM, Kubernetes, Beam)."""
