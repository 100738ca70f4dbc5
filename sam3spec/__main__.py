import sys

from sam3spec.cli import main

sys.exit(main())
