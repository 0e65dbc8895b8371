import sys

from pyroute2_cni.cli import main

sys.exit(main())
