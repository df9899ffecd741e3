import sys

from infershield.cli import main

sys.exit(main())
