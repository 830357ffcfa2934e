"""Tables and source listings: what the chapters show as text rather than as figures.

Nothing here needs matplotlib, so the tables live apart from the plots.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from ..hardware import GIB, HardwareInfo, choose_precision
from ..presets import select_preset


class MarkdownText(str):
    """A string that Jupyter and the book render as Markdown when it ends a cell."""

    def _repr_markdown_(self) -> str:
        return str(self)


def markdown_table(rows: Sequence[dict[str, object]]) -> MarkdownText:
    """A list of dicts with the same keys, as a Markdown table.

    Jupyter and the book render it. A "|" inside a cell (ChatML's <|im_end|>) is
    escaped, so it cannot split the cell in two.
    """
    if not rows:
        return MarkdownText("")
    header = list(rows[0])

    def line(cells: Iterable[object]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    lines = [line(header), "|" + "---|" * len(header)] + [
        line(row[k] for k in header) for row in rows
    ]
    return MarkdownText("\n".join(lines))


def preset_choice_rows(
    machines: Iterable[HardwareInfo], env: dict[str, str] | None = None
) -> list[dict[str, object]]:
    """For each machine, the preset the picker chooses and what it means for the run."""
    rows = []
    for machine in machines:
        choice = select_preset(machine, env={} if env is None else env)
        preset, summary = choice.preset, choice.preset.summary()
        rows.append(
            {
                "machine": str(machine),
                "preset": preset.name,
                "precision": choose_precision(machine, preset.train.dtype).dtype,
                "params (M)": summary["params (M)"],
                "batch x seq x accum": summary["batch x seq x accum"],
                "est. memory (GiB)": round(
                    preset.estimate_memory(machine).total / GIB, 2
                ),
                "est. time on its target": summary["est. time"],
            }
        )
    return rows


def show_source(obj: object):
    """Source code of a foundry_core function or class, syntax-highlighted."""
    import inspect

    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")
