"""Installing and checking: the Horovod build plan (stdlib only) and the doctor."""
