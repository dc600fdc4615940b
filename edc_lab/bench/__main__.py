"""``python -m edc_lab.bench ...``: the ``edc-lab bench`` sub-command run on its own."""

import argparse
import sys

from edc_lab.bench.cli import add_arguments, run

parser = argparse.ArgumentParser(prog="edc-lab bench")
add_arguments(parser)
sys.exit(run(parser.parse_args()))
