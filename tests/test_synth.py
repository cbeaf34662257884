import hashlib

import numpy as np
import pytest

from beam_preprocess.contract import dgrl, gnt
from beam_preprocess.contract.charset import gb2312_level1
from beam_preprocess.synthetic import synth
from beam_preprocess.synthetic.synth_cli import main as synth_main


def _digest(paths):
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(paths))).hexdigest()


def test_synthetic_gnt_is_readable_with_requested_classes_and_writers(tmp_path):
    out = tmp_path / "s"
    assert synth_main(["--out", str(out), "--writers", "3", "--classes", "50", "--pages", "1",
                       "--lines-per-page", "3", "--workers", "1", "--quiet"]) == 0
    files = sorted(out.glob("*.gnt"))
    assert [f.name for f in files] == ["S0001-synth.gnt", "S0002-synth.gnt", "S0003-synth.gnt"]
    expected = gb2312_level1()[:50]
    shapes = set()
    for f in files:
        samples = list(gnt.read_gnt(str(f)))
        assert [s.char for s in samples] == expected
        for s in samples:
            assert s.image.dtype == np.uint8 and s.image.min() < 128
            # cropped to ink: every border row/column holds some ink
            assert (s.image[0] < 250).any() and (s.image[-1] < 250).any()
            assert (s.image[:, 0] < 250).any() and (s.image[:, -1] < 250).any()
            shapes.add(s.image.shape)
    assert len(shapes) > 20  # sizes vary like CASIA bitmaps
    pages = sorted(out.glob("*.dgrl"))
    assert len(pages) == 3
    for p in pages:
        page = dgrl.read_dgrl(str(p))
        assert len(page.lines) == 3
        for line in page.lines:
            assert line.problems == () and len(line.text) >= 8
            assert line.image.shape[1] > line.image.shape[0]
    assert (out / "synth.json").exists()


def test_deterministic_for_a_seed_whatever_the_worker_count(tmp_path):
    args = ["--writers", "2", "--classes", "30", "--pages", "1", "--lines-per-page", "2",
            "--quiet", "--seed", "7"]
    synth_main(["--out", str(tmp_path / "a"), "--workers", "1", *args])
    synth_main(["--out", str(tmp_path / "b"), "--workers", "2", *args])
    a = list((tmp_path / "a").glob("*.gnt")) + list((tmp_path / "a").glob("*.dgrl"))
    b = list((tmp_path / "b").glob("*.gnt")) + list((tmp_path / "b").glob("*.dgrl"))
    assert _digest(a) == _digest(b)
    synth_main(["--out", str(tmp_path / "c"), "--workers", "1", *args[:-1], "8"])
    assert _digest(a) != _digest(list((tmp_path / "c").glob("*.gnt")) +
                                 list((tmp_path / "c").glob("*.dgrl")))


def test_writers_have_distinct_styles():
    fonts = synth.find_fonts(["中"])
    styles = {synth.writer_style(fonts, 0, w) for w in range(1, 11)}
    assert len(styles) == 10


def test_missing_font_error_names_the_packages(tmp_path, capsys):
    with pytest.raises(synth.NoFontError, match="fonts-arphic-ukai"):
        synth.find_fonts(["中"], font_dirs=[str(tmp_path)])
    assert synth_main(["--out", str(tmp_path / "o"), "--classes", "2", "--font-dir",
                       str(tmp_path), "--quiet"]) == 1
    assert "apt-get install" in capsys.readouterr().err


def test_help_quotes_the_readme_time():
    """`hccr-synth --help` gives the full-charset time the README's benchmark table states."""
    import os
    import re

    from beam_preprocess.synthetic.synth_cli import build_parser
    readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "README.md")
    with open(readme, encoding="utf-8") as f:
        measured = re.search(r"3755 classes x 10 writers \| ([\d,]+) samples in (\d+) s",
                             f.read())
    assert measured, "README's hccr-synth benchmark row is gone"
    text = build_parser().format_help()
    assert f"{measured.group(1)} samples in {measured.group(2)} s" in text
    assert "2-3 minutes" not in text
