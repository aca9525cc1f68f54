"""One plotting style for every figure the project makes: sizes, dpi, wrapped titles, labelled
log axes, legends outside the data, one colour and marker per variant.

Figures are `matplotlib.figure.Figure` objects (no pyplot: no global state, no GUI backend) with
constrained layout, which makes room for titles, labels and legends placed outside the axes.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter

DPI = 150
PANEL = (6.0, 4.4)           # inches per panel: a row of n panels is n x 6.0 wide (+ legends)
TITLE_SIZE = 10
SUPTITLE_SIZE = 10
LABEL_SIZE = 9
LEGEND_SIZE = 8
NOTE_COLOR = "firebrick"     # what the reader must not miss: a modelled or contended clock
CHARS_PER_INCH = 13          # of 10 pt text, with room to spare (DejaVu Sans averages ~14)

# One colour per averaging interval, the same in every figure (I = 4 is orange everywhere).
INTERVAL_ORDER = (1, 4, 8, 16, 32, 2, 64, 128)
MARKERS = "osD^v<>Ph*X"
LINESTYLES = ("-", "--", "-.", ":")


def figure(ncols: int = 1, nrows: int = 1, width: float | None = None,
           height: float | None = None, **subplot_kw):
    """A constrained-layout Figure and its axes (one Axes, or an array for several panels)."""
    fig = Figure(figsize=(width or PANEL[0] * ncols, height or PANEL[1] * nrows),
                 layout="constrained", dpi=DPI)
    axes = fig.subplots(nrows, ncols, squeeze=True, subplot_kw=subplot_kw or None)
    return fig, axes


def wrap(text: str, chars: int) -> str:
    """`text` wrapped at `chars` characters a line, keeping its own line breaks."""
    return "\n".join(textwrap.fill(line, max(chars, 20)) if line else line
                     for line in str(text).split("\n"))


def _chars(inches: float, fontsize: float) -> int:
    return int(inches * CHARS_PER_INCH * 10 / fontsize)


def title(ax, text: str, fontsize: float = TITLE_SIZE, **kw) -> None:
    """An axes title wrapped to the panel's width."""
    fig = ax.get_figure()
    inches = fig.get_figwidth() * ax.get_position().width
    ax.set_title(wrap(text, _chars(inches, fontsize)), fontsize=fontsize, **kw)


def suptitle(fig, text: str, fontsize: float = SUPTITLE_SIZE, **kw) -> None:
    """A figure title wrapped to the figure's width."""
    fig.suptitle(wrap(text, _chars(0.95 * fig.get_figwidth(), fontsize)), fontsize=fontsize, **kw)


def labels(ax, xlabel: str | None = None, ylabel: str | None = None,
           fontsize: float = LABEL_SIZE) -> None:
    """Axis labels wrapped to the panel: x along its width, y along its height."""
    fig = ax.get_figure()
    pos = ax.get_position()
    if xlabel is not None:
        ax.set_xlabel(wrap(xlabel, _chars(fig.get_figwidth() * pos.width, fontsize)),
                      fontsize=fontsize)
    if ylabel is not None:
        ax.set_ylabel(wrap(ylabel, _chars(fig.get_figheight() * pos.height, fontsize)),
                      fontsize=fontsize)


def note(ax, text: str, chars: int = 60, loc: str = "lower left") -> None:
    """A boxed remark inside the panel (what its clock is): red, so that it is read."""
    x, ha = (0.02, "left") if loc.endswith("left") else (0.98, "right")
    y, va = (0.03, "bottom") if loc.startswith("lower") else (0.97, "top")
    ax.text(x, y, textwrap.fill(text, chars), transform=ax.transAxes, ha=ha, va=va, fontsize=8,
            color=NOTE_COLOR, bbox=dict(boxstyle="round", facecolor="white",
                                        edgecolor=NOTE_COLOR, alpha=0.9))


def log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values for a log axis from `lo` to `hi`, at least three where the range allows:
    1-2-5 (or 1-2-3-5) per decade over more than a decade, every digit inside one decade, and
    evenly spaced round values where no digit tick falls inside (a narrow range)."""
    lo, hi = min(lo, hi), max(lo, hi)
    if not (lo > 0 and math.isfinite(lo) and math.isfinite(hi)):
        return []
    decades = range(math.floor(math.log10(lo)), math.floor(math.log10(hi)) + 1)

    def within(mantissas):
        return [m * 10.0 ** d for d in decades for m in mantissas
                if lo <= m * 10.0 ** d * (1 + 1e-9) and m * 10.0 ** d <= hi * (1 + 1e-9)]

    if len(within((1,))) >= 3:                   # several decades: the powers of ten
        return within((1,))
    for mantissas in ((1, 3), (1, 2, 5), (1, 2, 3, 5), range(1, 10)):
        ticks = within(mantissas)
        if 3 <= len(ticks) <= 9:
            return ticks
    ticks = within(range(1, 10))
    if len(ticks) >= 3:
        return ticks
    return [float(v) for v in MaxNLocator(nbins=4).tick_values(lo, hi) if lo <= v <= hi]


def log_axis(axis, lo: float | None = None, hi: float | None = None, base: float = 10) -> None:
    """Plain labels (0.6, 1, 2 rather than 6x10^-1) on a log axis from `lo` to `hi` (default: its
    current view), at least three of them; unlabelled minor ticks between."""
    if lo is None or hi is None:
        lo, hi = sorted(axis.get_view_interval())
    axis.set_major_locator(FixedLocator(log_ticks(lo, hi)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(LogLocator(base=base, subs="auto"))
    axis.set_minor_formatter(NullFormatter())


def log2_axis(axis, values) -> None:
    """A base-2 log axis labelled at exactly `values` (intervals I, workers K)."""
    axis.set_major_locator(FixedLocator(sorted(set(values))))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(FixedLocator([]))


def legend_outside(ax, fontsize: float = LEGEND_SIZE, **kw):
    """The axes' legend to the right of its panel, off the data (constrained layout makes room)."""
    if not ax.get_legend_handles_labels()[0]:
        return None
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                     fontsize=fontsize, title_fontsize=fontsize, **kw)


def legend_below(fig, ax, ncols: int = 3, fontsize: float = LEGEND_SIZE, **kw):
    """One legend for the whole figure, under the panels, from `ax`'s lines (panels that share
    their curves need it once)."""
    handles, names = ax.get_legend_handles_labels()
    if not handles:
        return None
    return fig.legend(handles, names, loc="outside lower center", ncols=min(ncols, len(names)),
                      fontsize=fontsize, title_fontsize=fontsize, **kw)


def grid(ax) -> None:
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)


def interval_color(interval: int) -> str:
    """The colour of averaging interval I, the same in every figure."""
    i = int(interval)
    k = INTERVAL_ORDER.index(i) if i in INTERVAL_ORDER else len(INTERVAL_ORDER) + i
    return f"C{k % 10}"


def variant_styles(names) -> dict[str, dict]:
    """Per variant name: colour, marker and line style, all three different from the previous
    variant's, so that two variants with the same curve (K-AVG and PR-SGD I=4) both show."""
    out = {}
    for k, name in enumerate(dict.fromkeys(names)):
        out[name] = dict(color=f"C{k % 10}", marker=MARKERS[k % len(MARKERS)],
                         linestyle=LINESTYLES[k % len(LINESTYLES)],
                         fillstyle="full" if k % 2 == 0 else "none")   # hollow: see through
    return out


def save(fig, path, exts=None) -> list[Path]:
    """Write `fig` at the house dpi: to `path` as given, or to path.<ext> for each of `exts`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    paths = [path] if not exts else [path.with_name(f"{path.name}.{e}") for e in exts]
    for p in paths:
        fig.savefig(p, dpi=DPI)
    return paths

