"""Publish a model's demo Space (spaces/grace or spaces/dynamicrag) in one commit, its card naming the model repo,
then load it back from the Hub and run its example to verify.

    python push_scripts/push_space.py spaces/grace OWNER/NAME --model OWNER/GRACE-REPO [--revision BRANCH] [--dry-run]

Same as `retrieval-policies push space ...`.
"""

from __future__ import annotations

import argparse
import sys

from retrieval_policies.publish import add_push_arguments, run_push

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_push_arguments(parser, space=True)
    sys.exit(run_push("space", parser.parse_args()))
