"""Tables that chapters print render as Markdown, whatever their cells hold."""

from foundry_core.viz import markdown_table


def test_markdown_table_renders_and_escapes_pipes():
    table = markdown_table([{"token": "<|im_end|>", "id": 5}, {"token": "a", "id": 6}])
    assert table._repr_markdown_() == table
    lines = table.splitlines()
    assert lines[0] == "| token | id |" and lines[1] == "|---|---|"
    assert lines[2] == "| <\\|im_end\\|> | 5 |"
    assert all(line.count("|") - line.count("\\|") == 3 for line in lines)
    assert markdown_table([]) == ""


def test_plot_curves_draws_runs_metrics_validation_and_baselines():
    import matplotlib

    matplotlib.use("Agg")
    from foundry_core.viz import plot_curves

    history = [{"step": s, "loss": 5.0 - s, "margin": 0.1 * s} for s in range(1, 5)]
    history[-1].update(val_loss=1.5, val_margin=0.5)
    labels = lambda fig: [line.get_label() for line in fig.axes[0].get_lines()]  # noqa: E731
    assert labels(plot_curves(history)) == ["loss (train)", "loss (validation)"]
    two_runs = plot_curves(
        {"a": history, "b": history}, baselines={"uniform guess": 6.2}
    )
    assert labels(two_runs) == [
        "a (train)",
        "a (validation)",
        "b (train)",
        "b (validation)",
        "uniform guess",
    ]
    metrics = plot_curves(
        history, {"loss": "loss", "margin": "margin"}, validation=False
    )
    assert labels(metrics) == ["loss", "margin"]
    assert list(metrics.axes[0].get_lines()[1].get_ydata()) == [
        0.1 * s for s in range(1, 5)
    ]


def test_plot_scaling_draws_the_profiles_and_the_law():
    from foundry_core.scaling import ScalingRun, fit_power_law
    from foundry_core.viz import plot_scaling

    budgets = [1e10, 2e10, 4e10]
    profiles = {
        c: [ScalingRun(w, 1000 * w, c, 10, 5 - i * 0.3 + w / 100) for w in (8, 16, 32)]
        for i, c in enumerate(budgets)
    }
    optima = [(c, 8000.0, runs[0].val_loss) for c, runs in profiles.items()]
    law = fit_power_law(budgets, [loss for _, _, loss in optima])
    fig = plot_scaling(profiles, optima, law, ScalingRun(8, 8000, 8e10, 10, 4.0))
    left, right = fig.axes
    assert len(left.get_lines()) == 2 * len(budgets)  # a profile and its star each
    assert right.get_xscale() == "log" and right.get_yscale() == "log"


def test_chinese_labels_draw_with_the_cjk_fallback_font():
    import warnings

    import matplotlib.pyplot as plt

    from foundry_core.viz.fonts import use_cjk_fallback

    assert use_cjk_fallback()  # the font is fetched with the offline corpora
    fig, ax = plt.subplots()
    ax.set_title("守株待兔 shǒu zhū dài tù")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph is a UserWarning
        fig.canvas.draw()
    plt.close(fig)
