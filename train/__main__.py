"""`python -m train CONFIG [key=value ...]` is `gte train CONFIG ...`."""

import sys

from train.app.cli import main

raise SystemExit(main(["train", *sys.argv[1:]]))
