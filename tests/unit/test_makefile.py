"""The Makefile's targets have no traps: every target that runs the environment's Python depends
on the install, the help texts carry no issue numbers, and `make test`'s preamble
(scripts/test_plan.py) names the groups that will skip. Read in-process: no `make` is started."""
from __future__ import annotations

import re
import runpy

import pytest

from conftest import ROOT

MAKEFILE = (ROOT / "Makefile").read_text()


def rules() -> dict[str, tuple[str, str]]:
    """target -> (its prerequisites, its recipe) for the rules with a `## help` text."""
    out = {}
    for m in re.finditer(r"^([a-z0-9-]+):([^\n#]*)(?:##[^\n]*)?\n((?:\t[^\n]*\n)*)", MAKEFILE, re.M):
        out[m.group(1)] = (m.group(2), m.group(3))
    return out


def test_every_target_that_runs_the_environment_depends_on_the_install():
    found = rules()
    assert {"reproduce", "reproduce-1gpu", "figure", "notebook", "test", "test-fast"} <= set(found)
    trapped = [t for t, (prereqs, recipe) in found.items()
               if t not in ("use-env", "use-env-base")      # they are the install (PY=)
               and "$(PY)" in recipe and "$(BASE)" not in prereqs and "$(FULL)" not in prereqs]
    assert not trapped, f"targets that run $(PY) without installing it first: {trapped}"
    # the Horovod-free ones need no Horovod build; the launchers' ones do
    assert "$(BASE)" in found["reproduce-1gpu"][0] and "$(FULL)" in found["reproduce"][0]
    assert "$(FULL)" in found["smoke"][0] and "$(FULL)" in found["doctor"][0]


def test_help_texts_are_plain():
    helps = re.findall(r"^[a-z0-9-]+:.*## (.*)$", MAKEFILE, re.M)
    assert len(helps) >= 20
    assert not [h for h in helps if re.search(r"issue \d|\(issue|\$\(", h)]
    # the long targets say their time or that they never ran
    for target in ("reproduce", "reproduce-1gpu", "demo", "lab-figure3", "test"):
        line = re.search(rf"^{target}:.*## (.*)$", MAKEFILE, re.M).group(1)
        assert re.search(r"\d+ (min|s)\b|never run", line), (target, line)


def test_the_gpu_targets_check_first_and_honour_np():
    found = rules()
    prereqs, recipe = found["reproduce"]
    assert prereqs.split()[0] == "reproduce-gpus"          # before the install
    assert "--np $(PAPER_NP)" in recipe
    assert re.search(r"^PAPER_NP := \$\(or \$\(NP\),8\)$", MAKEFILE, re.M)
    assert found["reproduce-1gpu"][0].split()[0] == "reproduce-1gpu-check"
    assert "--np $(PAPER_NP)" in found["reproduce-1gpu"][1]
    # the checks: nvidia-smi's count against the ranks, and no sweep into the committed run
    assert "$(call need_gpus,$(PAPER_NP)," in MAKEFILE and "$(call need_gpus,1," in MAKEFILE
    assert re.search(r"^ONE_GPU_DIR \?= results/figure3-h100-packed$", MAKEFILE, re.M)


def test_plan_names_the_groups_that_skip(monkeypatch):
    plan = runpy.run_path(str(ROOT / "scripts" / "test_plan.py"))
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setitem(plan["missing_mpi"].__globals__, "sys",
                        type("S", (), {"executable": "/nonexistent/python"}))
    assert "no OpenMPI" in plan["missing_mpi"]()
    monkeypatch.setitem(plan["missing_mpi"].__globals__, "on_path", lambda tool: True)
    monkeypatch.setitem(plan["missing_mpi"].__globals__, "horovod_has_mpi", lambda: False)
    if plan["importlib"].util.find_spec("horovod") is not None:
        assert "Horovod was built without MPI" in plan["missing_mpi"]()
    monkeypatch.setitem(plan["missing_mpi"].__globals__, "horovod_has_mpi", lambda: True)
    assert plan["missing_mpi"]() is None
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "no GPU" in plan["missing_gpu"]()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert plan["missing_gpu"]() is None
