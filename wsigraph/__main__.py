import sys

from wsigraph.cli import main

sys.exit(main())
