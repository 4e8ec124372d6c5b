"""``python -m sim.bench`` (``make bench``): the capacity benchmark of :mod:`sim.bench.capacity`."""

import sys

from sim.bench.capacity import main

sys.exit(main())
