"""Interactive controls for the chapters. Each has a static twin in viz,
because the published book has no kernel to run widgets."""

from __future__ import annotations

from ..hardware import choose_precision
from ..presets import EXAMPLE_MACHINES, select_preset
from .tables import markdown_table


def preset_explorer():
    """Pick a machine; see the preset chosen for it, its precision, model size, memory
    and time."""
    import ipywidgets as widgets
    from IPython.display import Markdown, display

    machines = {str(m): m for m in EXAMPLE_MACHINES}
    dropdown = widgets.Dropdown(
        options=list(machines), description="machine", layout={"width": "max-content"}
    )
    out = widgets.Output()

    def show(_=None) -> None:
        machine = machines[dropdown.value]
        choice = select_preset(machine, env={})
        preset = choice.preset
        precision = choose_precision(machine, preset.train.dtype)
        rows = [{"": k, "value": v} for k, v in preset.summary().items()]
        out.clear_output(wait=True)
        with out:
            display(
                Markdown(
                    f"**{preset.name}**: {choice.reason}.  \n"
                    f"Precision: {precision.reason}.\n\n" + markdown_table(rows)
                )
            )

    dropdown.observe(show, names="value")
    show()
    return widgets.VBox([dropdown, out])


def attention_explorer(model, encode, labels, text: str):
    """Type a text, pick a layer and a head, see who attends to whom.

    `encode(text)` gives a list of token ids, `labels(ids)` the strings to print on the
    axes.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    import torch
    from IPython.display import display

    from .model_plots import plot_attention

    n_layers, n_heads = model.config.n_layers, model.config.n_heads
    box = widgets.Text(value=text, description="text", layout={"width": "90%"})
    layer = widgets.IntSlider(0, 0, n_layers - 1, description="layer")
    head = widgets.IntSlider(0, 0, n_heads - 1, description="head")
    out = widgets.Output()

    def show(_=None) -> None:
        ids = encode(box.value)[: model.config.max_seq_len] or [0]
        maps = model.attention_maps(torch.tensor([ids]))
        out.clear_output(wait=True)
        with out:
            fig = plot_attention(maps, labels(ids), [layer.value], [head.value])
            fig.set_size_inches(6, 6)
            display(fig)
            plt.close(fig)

    for control in (box, layer, head):
        control.observe(show, names="value")
    show()
    return widgets.VBox([box, widgets.HBox([layer, head]), out])


def bpe_explorer(model, text: str):
    """Slide through a teaching BPE model's merges and watch the text's tokens grow."""
    import ipywidgets as widgets
    from IPython.display import HTML, display

    from ..bpe import BPEModel
    from .data_plots import tokens_html

    slider = widgets.IntSlider(0, 0, len(model.merges), description="merges")
    out = widgets.Output()

    def show(_=None) -> None:
        partial = BPEModel(model.merges[: slider.value])
        pieces = [
            partial.vocab[i].decode("utf-8", errors="replace")
            for i in partial.encode(text)
        ]
        latest = model.merges[slider.value - 1] if slider.value else None
        note = (
            f"last merge: {latest.pair[0]!r} + {latest.pair[1]!r} "
            f"(seen {latest.count} times)"
            if latest
            else ""
        )
        out.clear_output(wait=True)
        with out:
            display(HTML(f"<p>{len(pieces)} tokens. {note}</p>" + tokens_html(pieces)))

    slider.observe(show, names="value")
    show()
    return widgets.VBox([slider, out])


def sampling_explorer(model, tokenizer, prompt: str, max_new_tokens: int = 60):
    """Prompt, temperature, top-k and top-p sliders; shows a sample (seeded, so a change
    shows its effect)."""
    import ipywidgets as widgets
    import torch

    from ..generate import generate

    text = widgets.Textarea(value=prompt, description="prompt", layout={"width": "90%"})
    temperature = widgets.FloatSlider(
        0.8, min=0.0, max=2.0, step=0.1, description="temperature"
    )
    top_k = widgets.IntSlider(50, min=1, max=200, description="top-k")
    top_p = widgets.FloatSlider(1.0, min=0.05, max=1.0, step=0.05, description="top-p")
    out = widgets.Output()

    def show(_=None) -> None:
        ids = tokenizer.encode(text.value)[
            -(model.config.max_seq_len - max_new_tokens) :
        ] or [tokenizer.bos_id]
        new = generate(
            model,
            ids,
            max_new_tokens,
            temperature=temperature.value,
            top_k=top_k.value,
            top_p=top_p.value,
            generator=torch.Generator().manual_seed(0),
        )[0]
        out.clear_output(wait=True)
        with out:
            print(text.value + tokenizer.decode(new))

    for control in (text, temperature, top_k, top_p):
        control.observe(show, names="value")
    show()
    return widgets.VBox([text, widgets.HBox([temperature, top_k, top_p]), out])
