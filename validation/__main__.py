"""``python -m validation``: same as ``sdekit validate``."""

import sys

from validation._cli import main

if __name__ == "__main__":
    sys.exit(main())
