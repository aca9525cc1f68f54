"""A cluster on one machine: network namespaces, shaped links, sshd (and Slurm)."""
