"""docs/downstream.png: the downstream experiment's headline metrics, drawn (matplotlib, optional).

What is drawn is computed by minihbt/experiments/downstream_report.py:figure_bars (tested there);
this module only draws it: one panel per task, seen and unseen languages, a bar per model, the
test-row 95% interval in black and the seed spread in grey where there are several seeds.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path


def draw(bars: dict, titles: dict[str, str], path: Path) -> None:
    """Each task's headline metric, seen and unseen languages, one bar per model (bars: what
    downstream_report.figure_bars computes; titles: {task: its title}):
    black error bars the test-row 95% interval, grey ones (beside them) the sd over seeds, drawn
    only for rows with several seeds."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e '.[plot]'): figure skipped", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, len(titles), figsize=(15, 4.8))
    any_sd = False
    for ax, (task, title) in zip(axes, titles.items()):
        rows = bars.get(task, [])
        width, lo, hi = 0.8 / max(1, len(rows)), math.inf, -math.inf
        for i, (name, stats) in enumerate(rows):
            splits = [s for s in ("seen", "unseen") if s in stats]
            xs = [("seen", "unseen").index(s) + i * width for s in splits]
            ms = [stats[s][0] for s in splits]
            cis = [stats[s][1] for s in splits]
            ax.bar(xs, ms, width, label=name)
            ax.errorbar(xs, ms, yerr=cis, fmt="none", ecolor="black", elinewidth=1.2, capsize=3,
                        label="95% interval of the mean, test rows" if i == 0 else None)
            sds = [(x, m, stats[s][2]) for x, m, s in zip(xs, ms, splits) if stats[s][2] is not None]
            if sds:
                any_sd = True
                ax.errorbar([x + width / 4 for x, _, _ in sds], [m for _, m, _ in sds], yerr=[sd for _, _, sd in sds],
                            fmt="none", ecolor="grey", elinewidth=1.2, capsize=2, label="sd over seeds")
            lo = min(lo, *(m - max(c, sd or 0) for m, c, sd in stats.values()))
            hi = max(hi, *(m + max(c, sd or 0) for m, c, sd in stats.values()))
        if rows:
            pad = max(0.02, 0.15 * (hi - lo))
            ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad))  # zoomed: the differences are small
        ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(2)], ["seen", "unseen"])
        ax.set_title(title.split(" (")[0], fontsize=10)
    handles, names = [], []
    for ax in axes:  # one legend entry per name, models first, then the error bars
        for h, n in zip(*ax.get_legend_handles_labels()):
            if n not in names:
                handles.append(h)
                names.append(n)
    order = sorted(range(len(names)), key=lambda k: (names[k] in ("95% interval of the mean, test rows", "sd over seeds"), k))
    fig.legend([handles[k] for k in order], [names[k] for k in order], loc="lower center",
               ncol=math.ceil(len(names) / 2), fontsize=9)  # two rows: one row is wider than the figure
    spread = "grey bars: sd over seeds, where there are several" if any_sd else "one seed per model: no seed spread"
    fig.suptitle("e5-small, frozen: macro means over seen / unseen languages; y axes zoomed, not from 0\n"
                 "black bars: 95% interval of each mean from the test rows (unpaired: compare two models by the "
                 f"paired table); {spread}", fontsize=10)
    fig.tight_layout(rect=(0, 0.13, 1, 0.97))
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", file=sys.stderr)
