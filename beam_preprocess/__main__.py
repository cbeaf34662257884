"""`python -m beam_preprocess ...` is `hccr-preprocess ...`."""
import sys

from beam_preprocess.pipeline import main

sys.exit(main())
