"""The compression table (prsgd.plots.compression): each run's bytes against the uncompressed run
at the smallest interval, read from the runs' own records."""
import pandas as pd

from prsgd.plots.compression import summary


def run(name, interval, compressor, sent):
    cfg = {"config": {"algorithm": "prsgd", "interval": interval, "compressor": compressor,
                      "topk_ratio": 0.01, "error_feedback": True}}
    df = pd.DataFrame({"epoch": [1, 2], "rounds": [2, 4], "bytes": [sent / 2, sent],
                       "bytes_received": [sent, 2 * sent], "train_loss": [2.0, 1.5],
                       "test_acc": [0.3, 0.4]})
    return name, cfg, df


def test_bytes_are_relative_to_the_uncompressed_run_at_the_smallest_interval():
    table = summary([run("a", 16, "none", 1e6), run("b", 4, "none", 4e6),
                     run("c", 4, "int8", 1.01e6)]).set_index("run")
    assert table.bytes_vs_baseline.to_dict() == {"a": 0.25, "b": 1.0, "c": 0.2525}
    assert table.loc["c", "MB_received"] == 2.02 and table.loc["c", "epochs"] == 2
    assert "int8" in table.loc["c", "label"] and table.loc["a", "label"] != table.loc["b", "label"]
