"""`hccr-synth`: render the embedded default dataset (synthetic GNT writers and DGRL pages)."""
from __future__ import annotations

import argparse
import sys
import time

from beam_preprocess import cli_errors, dataclass_flags
from beam_preprocess.contract.charset import Charset
from beam_preprocess.synthetic.synth import NoFontError, SynthSpec, synthesize


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hccr-synth",
        description="Render synthetic handwriting from the installed CJK fonts into CASIA-format\n"
                    "files: one GNT file per synthetic writer (S<writer>-synth.gnt, every class\n"
                    "once per writer, like a CASIA writer file) and optionally DGRL text-line\n"
                    "pages (S<writer>-P<page>.dgrl). Deterministic for a seed.",
        epilog="Examples:\n"
               "  hccr-synth --out data/synth --writers 10\n"
               "      all 3755 GB2312 level-1 classes: 37,550 samples in 89 s on the 2-core\n"
               "      reference machine (README, Benchmarks)\n"
               "  hccr-synth --out data/small --writers 6 --classes 100 --pages 2 --seed 1\n"
               "      100 classes and 2 DGRL text-line pages per writer",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    # Every SynthSpec field is a flag, with the default and help of the dataclass, except the
    # characters, which come from --charset, --classes and --chars.
    dataclass_flags.add_flags(p, SynthSpec, exclude=("chars",),
                              names={"out_dir": "--out", "font_dirs": "--font-dir"})
    p.add_argument("--charset", default="gb2312-1",
                   help="'gb2312-1' (default, 3755 classes) or a charset file")
    p.add_argument("--classes", type=int, default=None,
                   help="use only the first N characters of the charset (default: all)")
    p.add_argument("--chars", default=None, help="explicit characters to render, e.g. '永和九年'")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: all cores); output is the same for any count")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


@cli_errors.entry_point("hccr-synth")
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.chars:
        chars = list(dict.fromkeys(args.chars))
    else:
        chars = Charset.named(args.charset).chars
    if args.classes is not None:
        if not 0 < args.classes <= len(chars):
            print(f"hccr-synth: --classes must be in 1..{len(chars)}", file=sys.stderr)
            return 2
        chars = chars[:args.classes]
    for name in ("writers", "samples_per_class", "lines_per_page"):
        if getattr(args, name) < 1:
            print(f"hccr-synth: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    if len(args.line_length) != 2 or not 1 <= args.line_length[0] < args.line_length[1]:
        print(f"hccr-synth: --line-length takes MIN,MAX with 1 <= MIN < MAX. Received: "
              f"{','.join(map(str, args.line_length))}", file=sys.stderr)
        return 2
    spec = dataclass_flags.from_args(SynthSpec, args, chars=tuple(chars))
    start = time.monotonic()
    try:
        manifest = synthesize(spec, workers=args.workers, progress=not args.quiet)
    except NoFontError as err:
        cli_errors.show_traceback(err)
        print(f"hccr-synth: {err}", file=sys.stderr)
        return 1
    print(f"hccr-synth: wrote {manifest['samples']} samples of {manifest['classes']} classes "
          f"from {args.writers} writers" +
          (f" and {manifest['lines']} lines on {manifest['pages']} pages" if args.pages else "") +
          f" to {spec.out_dir} in {time.monotonic() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
