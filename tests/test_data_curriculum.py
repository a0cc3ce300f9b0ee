"""The curriculum reproduces the official per-epoch levels (official §5) [V]."""

from __future__ import annotations

import pytest

from lnca_fast.data.curriculum import EVAL_LEVEL, Curriculum


def test_official_levels_over_ten_epochs():
    assert Curriculum("denoise", 10).levels() == [0.25, 0.25, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.75]
    assert Curriculum("deblur", 10).levels() == [4, 4, 4, 4, 6, 7, 9, 10, 10, 10]
    assert EVAL_LEVEL == {"denoise": 0.5, "deblur": 7}


def test_spread_over_configured_epochs_and_capped():
    assert Curriculum("denoise", 4).levels() == [0.25, 0.25, 0.5, 0.75]
    assert Curriculum("denoise", 10, top=0.5).levels()[-3:] == [0.5, 0.5, 0.5]
    assert Curriculum("deblur", 20, top=7).level(19) == 7
    assert Curriculum("denoise", 10, top=0.5, bottom=0.5).levels() == [0.5] * 10
    assert Curriculum("denoise", 10, bottom=0.4).levels() == [0.4, 0.4, 0.4, 0.4, 0.4, 0.5, 0.6, 0.7, 0.75, 0.75]
    assert Curriculum("deblur", 10, bottom=7).levels() == [7, 7, 7, 7, 7, 7, 9, 10, 10, 10]


def test_bad_curriculum():
    with pytest.raises(ValueError):
        Curriculum("denoise", 0)
    with pytest.raises(ValueError):
        Curriculum("denoise", 10, top=0.1)
    with pytest.raises(ValueError, match="bottom"):
        Curriculum("denoise", 10, top=0.5, bottom=0.6)
    with pytest.raises(ValueError, match="bottom"):
        Curriculum("deblur", 10, bottom=2)
    with pytest.raises(ValueError):
        Curriculum("sharpen", 10)
