import sys

from p2pcompute.cli.main import main

sys.exit(main())
