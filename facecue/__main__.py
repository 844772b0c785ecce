import sys

from facecue.cli import main

sys.exit(main())
