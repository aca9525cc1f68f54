"""`python -m prsgd.train --help` teaches (issue 18 §4): every flag has a one-line help with its
default (and its choices), grouped; algorithm options say whose they are. In-process through the
parser: the help needs neither Horovod nor a launcher."""
from __future__ import annotations

import sys

from prsgd.core.config import build_parser

GROUPS = ["data", "model and optimisation", "algorithm", "backend", "run records"]


def flags_by_group() -> dict[str, list]:
    p = build_parser()
    return {g.title: [a for a in g._group_actions if a.option_strings]
            for g in p._action_groups}


def test_every_flag_has_a_one_line_help_with_its_default():
    groups = flags_by_group()
    actions = [a for title, acts in groups.items() if title != "options" for a in acts]
    assert len(actions) > 40
    for a in actions:
        assert a.help and "\n" not in a.help, a.option_strings
        assert "(default: " in a.help, a.option_strings


def test_flags_are_grouped_and_algorithm_options_name_their_algorithm():
    groups = flags_by_group()
    assert [t for t in groups if t in GROUPS] == GROUPS
    where = {a.option_strings[0]: t for t, acts in groups.items() for a in acts}
    assert where["--batch-size"] == "model and optimisation"
    assert where["--dataset"] == "data" and where["--backend"] == "backend"
    assert where["--interval"] == "algorithm" and where["--out"] == "run records"
    assert where["--outer-lr"] == "options of --algorithm diloco"
    assert where["--worker-intervals"] == "options of --algorithm hetero"
    for title, acts in groups.items():
        if title.startswith("options of --algorithm "):
            owners = title.removeprefix("options of --algorithm ").split(" / ")
            assert all(a.help.startswith(f"[{'/'.join(owners)}] ") for a in acts)


def test_help_text_says_what_the_issue_asks(capsys):
    text = build_parser().format_help()
    flat = " ".join(text.split())
    assert "local mini-batch size PER WORKER" in flat
    assert "I: local steps between two averaging rounds" in flat
    # choices come from the registries and the presets
    assert "{prsgd,kavg,gradient_allreduce,hier,varying,one_shot,post_local,hetero,diloco,adacomm}" in flat
    assert "--backend {horovod,packed,torchdist}" in flat and "{paper,demo,smoke}" in flat
    # defaults, and what a preset changes
    assert "(default: 32; smoke: 16)" in flat and "(default: 0.7)" in flat


def test_help_needs_no_horovod(capsys, monkeypatch):
    """With Horovod unimportable (None in sys.modules makes `import horovod` fail), --help
    still prints everything and exits 0."""
    from prsgd import train
    for name in ("horovod", "horovod.torch"):
        monkeypatch.setitem(sys.modules, name, None)
    try:
        train.main(["--help"])
    except SystemExit as e:
        assert e.code == 0
    assert "--outer-lr" in capsys.readouterr().out
