"""Figure 3 over runs of different N is refused in one line (issue 21 §5): two real tiny runs."""
from unit.test_messages import train


def test_figure3_refuses_runs_of_different_n(tmp_path, capsys):
    from prsgd.plots import figure3
    for n in (2, 4):
        assert train(capsys, "--workers", n, "--out", tmp_path, "--run-id", f"N{n}")[0] == 0
    assert figure3.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"plot_figure3: error: {tmp_path}: runs of different worker counts cannot "
                   "share one figure (N=2: N2; N=4: N4); plot each N from its own folder"], err
    assert not (tmp_path / "figure3.png").exists()
