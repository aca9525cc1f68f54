"""The training core: config, build, the loop's parts (step, feed, flat buffer, schedule), models, diagnostics."""
