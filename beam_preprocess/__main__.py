"""`python -m beam_preprocess ...` is `hccr-preprocess ...`."""
import sys

from beam_preprocess.job.pipeline import main

sys.exit(main())
