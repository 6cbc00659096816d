"""`python -m llm_unlearn RECIPE` runs a recipe, so `accelerate launch -m llm_unlearn RECIPE` works."""

import sys

from llm_unlearn.cli import SUBCOMMANDS, main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv and argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
        argv = ["run", *argv]
    sys.exit(main(argv))
