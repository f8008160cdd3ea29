import sys

from fpnas_dsl.cli import main

sys.exit(main())
