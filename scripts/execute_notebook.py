"""Re-execute a notebook on the committed results and save its outputs (`make notebook`), or check
that the saved outputs are still what re-execution gives (`--check`).

    python scripts/execute_notebook.py notebooks/figure3.ipynb           # rewrite its outputs
    python scripts/execute_notebook.py notebooks/figure3.ipynb --check   # exit 1 if stale

Outputs are compared as text (streams, text/plain, text/markdown, errors), not as images: a PNG's
bytes change with the matplotlib and font versions while what it was drawn from does not.
The kernel runs in the notebook's folder unless `cwd` says otherwise.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

TEXT_KINDS = ("text/plain", "text/markdown")


def execute(path: Path, cwd: Path | None = None, timeout: int = 600):
    """The notebook at `path`, executed from a clean kernel (the file is not touched)."""
    import nbclient
    import nbformat
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = nbclient.NotebookClient(
        nb, timeout=timeout, kernel_name="python3", record_timing=False,
        resources={"metadata": {"path": str(cwd or Path(path).resolve().parent)}})
    client.execute()
    return nb


def text_outputs(nb) -> list[list[str]]:
    """Per code cell, its outputs as text: what a reader reads, without the images."""
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        texts = []
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                texts.append(f"{out.name}: {out.text}")
            elif out.output_type == "error":
                texts.append(f"error: {out.ename}: {out.evalue}")
            else:
                texts += [f"{k}: {out.data[k]}" for k in TEXT_KINDS if k in out.get("data", {})]
        cells.append(texts)
    return cells


def stale_cells(saved, fresh) -> list[str]:
    """What differs between the saved notebook and a fresh execution, one line per code cell."""
    problems = []
    for i, (a, b) in enumerate(zip(text_outputs(saved), text_outputs(fresh)), start=1):
        if not a and b:
            problems.append(f"code cell {i}: saved without outputs")
        elif a != b:
            problems.append(f"code cell {i}: saved outputs differ from re-execution")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="execute_notebook", description=__doc__.splitlines()[0])
    p.add_argument("notebook", type=Path)
    p.add_argument("--check", action="store_true",
                   help="do not write: exit 1 when the saved outputs are missing or stale")
    args = p.parse_args(argv)
    import nbformat
    if not args.notebook.exists():
        p.error(f"{args.notebook}: no such notebook")
    fresh = execute(args.notebook)
    errors = [t for cell in text_outputs(fresh) for t in cell if t.startswith("error: ")]
    if errors:
        print(f"execute_notebook: {args.notebook}: " + "; ".join(errors), file=sys.stderr)
        return 1
    if args.check:
        problems = stale_cells(nbformat.read(args.notebook, as_version=4), fresh)
        for line in problems:
            print(f"execute_notebook: {args.notebook}: {line} (make notebook)", file=sys.stderr)
        return 1 if problems else 0
    nbformat.write(fresh, args.notebook)
    print(f"{args.notebook}: executed, outputs saved")
    return 0


if __name__ == "__main__":
    sys.exit(main())
