"""Publish a model folder to the Hub in one commit, after checking it is complete, then load it back to verify.

    python push_scripts/push_model.py FOLDER OWNER/NAME [--revision BRANCH] [--private] [--dry-run] [--no-verify]

Same as `retrieval-policies push model ...`.
"""

from __future__ import annotations

import argparse
import sys

from retrieval_policies.publish import add_push_arguments, run_push

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_push_arguments(parser)
    sys.exit(run_push("model", parser.parse_args()))
