"""``python -m preprocess``: build a dataset directory; ``python -m preprocess merge``: join parts."""
import sys

from preprocess.cli import main

if __name__ == "__main__":
    sys.exit(main())
