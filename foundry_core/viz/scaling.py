"""The scaling-law figure: IsoFLOP profiles and the power law through their bottoms."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from ..scaling import PowerLaw, ScalingRun


def plot_scaling(
    profiles: dict[float, list[ScalingRun]],
    optima: Sequence[tuple[float, float, float]],
    law: PowerLaw,
    held_out: ScalingRun,
):
    """Left: validation loss against model size, one curve per compute budget, each
    bottom marked. Right: the bottoms against compute on log-log axes, the fitted
    power law carried past them, and the held-out run with the law's 95% interval."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullLocator

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, (budget, runs) in enumerate(profiles.items()):
        color = f"C{i}"
        left.plot(
            [r.params for r in runs],
            [r.val_loss for r in runs],
            marker="o",
            color=color,
            label=f"{budget:.0e} FLOPs",
        )
        params, loss = optima[i][1:]
        left.plot(params, loss, marker="*", markersize=14, color=color)
    left.set_xscale("log")
    left.set_xlabel("parameters")
    left.set_ylabel("validation loss")
    left.set_title("IsoFLOP profiles: the best size for each budget (stars)")
    left.legend(fontsize=8)
    budgets = [c for c, _, _ in optima]
    right.plot(budgets, [loss for _, _, loss in optima], "o", label="budget optima")
    span = [min(budgets), held_out.compute]
    right.plot(span, [law(c) for c in span], "--", color="gray", label="power law")
    low, high = law.interval(held_out.compute)
    right.errorbar(
        [held_out.compute],
        [law(held_out.compute)],
        yerr=[[law(held_out.compute) - low], [high - law(held_out.compute)]],
        fmt="none",
        color="gray",
        capsize=4,
    )
    right.plot(
        held_out.compute, held_out.val_loss, "s", color="C3", label="held-out run"
    )
    right.set_xscale("log")
    right.set_yscale("log")
    # a loss range far inside one decade: plain numbers, not powers of ten
    right.yaxis.set_major_locator(MaxNLocator(5))
    right.yaxis.set_major_formatter(FormatStrFormatter("%.1f"))
    right.yaxis.set_minor_locator(NullLocator())
    right.set_xlabel("training compute (FLOPs)")
    right.set_ylabel("validation loss")
    right.set_title("The best loss falls as a power of compute")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig
