"""Reports of an evaluation: a printed table, JSON, CSV, Markdown and a PNG plot.

`write_reports(result, "results.json")` writes results.json (global numbers and every row),
results.csv (the rows), results.md (both as Markdown tables) and results.png (per-item J&F, or
IoU for image protocols, or J&F against the number of interacted frames for `pvs`). Each file is
written to a temporary name and renamed into place.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from refseg.eval.protocols import EvalResult  # noqa: E402
from refseg.io.atomic import atomic_file


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def summary_table(result: EvalResult) -> str:
    """The global numbers as aligned text lines."""
    width = max(len(k) for k in result.summary)
    lines = [f"{result.protocol}"] + [f"  {k:<{width}}  {_fmt(v)}" for k, v in result.summary.items()]
    if result.curve:
        xs, ys = list(result.curve.values())[:2]
        lines.append("  " + "  ".join(f"{x:g}:{_fmt(y)}" for x, y in zip(xs, ys)))
    return "\n".join(lines)


def _markdown(result: EvalResult) -> str:
    lines = [f"# {result.protocol}", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in result.summary.items()]
    if result.curve:
        names = list(result.curve)
        lines += ["", "| " + " | ".join(names) + " |", "|" + " --- |" * len(names)]
        lines += ["| " + " | ".join(_fmt(result.curve[n][i]) for n in names) + " |"
                  for i in range(len(result.curve[names[0]]))]
    if result.rows:
        columns = list(result.rows[0])
        lines += ["", "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
        lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in result.rows]
    if result.missing:
        lines += ["", f"Missing predictions, scored as empty masks ({len(result.missing)}):", ""]
        lines += [f"- {name}" for name in result.missing]
    return "\n".join(lines) + "\n"


def _csv(result: EvalResult) -> str:
    buffer = io.StringIO()
    if result.rows:
        writer = csv.DictWriter(buffer, fieldnames=list(result.rows[0]))
        writer.writeheader()
        writer.writerows(result.rows)
    return buffer.getvalue()


def _plot(result: EvalResult) -> bytes:
    figure, axis = plt.subplots(figsize=(8, 4), dpi=100)
    if result.curve:
        xs, ys = list(result.curve.values())[:2]
        axis.plot(xs, ys, marker="o")
        axis.set_xlabel(list(result.curve)[0])
        axis.set_ylabel(list(result.curve)[1])
    else:
        metric = next((m for m in ("J&F", "IoU") if result.rows and m in result.rows[0]), None)
        if metric is None and result.rows and "I" in result.rows[0]:
            values = sorted(r["I"] / r["U"] if r["U"] else 1.0 for r in result.rows)  # type: ignore[operator]
            metric = "IoU"
        else:
            values = sorted(float(r[metric]) for r in result.rows) if metric else []  # type: ignore[arg-type]
        axis.bar(range(len(values)), values, width=1.0)
        axis.set_xlabel(f"{result.key} (sorted)")
        axis.set_ylabel(metric or "")
    axis.set_ylim(0, 1)
    axis.set_title(result.protocol)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def write_reports(result: EvalResult, out: str | os.PathLike[str]) -> list[Path]:
    """Write JSON, CSV, Markdown and PNG next to each other; returns their paths."""
    base = Path(out).with_suffix("")
    payload = {"protocol": result.protocol, "summary": result.summary, "curve": result.curve, "rows": result.rows,
               "missing_predictions": result.missing}
    files = {
        base.with_suffix(".json"): json.dumps(payload, indent=2, allow_nan=True).encode(),
        base.with_suffix(".csv"): _csv(result).encode(),
        base.with_suffix(".md"): _markdown(result).encode(),
        base.with_suffix(".png"): _plot(result),
    }
    for path, data in files.items():
        with atomic_file(path) as tmp:
            tmp.write_bytes(data)
    return list(files)
