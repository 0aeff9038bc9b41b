import sys

from moonseg3r_ros.tools.replay.cli import main

sys.exit(main())
