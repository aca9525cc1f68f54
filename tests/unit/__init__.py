"""The fast tier: in-process tests, no launcher, no subprocess (make test-fast)."""
