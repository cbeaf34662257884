"""`python -m trainers` = `hccr-train`."""
import sys

from trainers.training.main import main

sys.exit(main())
