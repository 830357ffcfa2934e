"""Chinese characters in figures: matplotlib's default font (DejaVu Sans) has none, so
the Chinese track's token labels would print as empty boxes. Noto Sans CJK SC joins
the font families as a fallback: Latin text keeps its usual look, and each character
the first family lacks comes from Noto.
"""

from __future__ import annotations

from ..data.sources import CJK_FONT, cache_dir, cjk_font
from ..recipe import corpus_track

FALLBACK = "Noto Sans CJK SC"


def use_cjk_fallback() -> bool:
    """Add the CJK font to matplotlib's font families as a fallback; True when it is in
    use.

    The font comes from the course's cache (`python -m foundry_core.data.sources
    fetch` puts it there). On the Chinese track a missing font is fetched; elsewhere
    nothing is downloaded for it.
    """
    import matplotlib
    from matplotlib import font_manager

    families = list(matplotlib.rcParams["font.family"])
    if FALLBACK in families:
        return True
    if not (cache_dir() / CJK_FONT.filename).exists() and corpus_track() != "zh":
        return False
    try:
        path = cjk_font()
    except FileNotFoundError:  # offline, and never fetched
        return False
    font_manager.fontManager.addfont(str(path))
    matplotlib.rcParams["font.family"] = [*families, FALLBACK]
    return True
