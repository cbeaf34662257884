"""`python -m trainers` = `hccr-train`."""
import sys

from trainers.main import main

sys.exit(main())
