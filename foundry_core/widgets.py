"""Interactive controls for the chapters. Each has a static twin in viz.py, because the published book
has no kernel to run widgets."""

from __future__ import annotations

from .hardware import choose_precision
from .presets import EXAMPLE_MACHINES, select_preset
from .viz import markdown_table


def preset_explorer():
    """Pick a machine; see the preset chosen for it, its precision, model size, memory and time."""
    import ipywidgets as widgets
    from IPython.display import Markdown, display

    machines = {str(m): m for m in EXAMPLE_MACHINES}
    dropdown = widgets.Dropdown(options=list(machines), description="machine", layout={"width": "max-content"})
    out = widgets.Output()

    def show(_=None) -> None:
        machine = machines[dropdown.value]
        choice = select_preset(machine, env={})
        preset = choice.preset
        precision = choose_precision(machine, preset.train.dtype)
        rows = [{"": k, "value": v} for k, v in preset.summary().items()]
        out.clear_output(wait=True)
        with out:
            display(Markdown(f"**{preset.name}**: {choice.reason}.  \nPrecision: {precision.reason}.\n\n"
                             + markdown_table(rows)))

    dropdown.observe(show, names="value")
    show()
    return widgets.VBox([dropdown, out])
