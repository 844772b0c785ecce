"""facecue: real-time age, gender and emotion cues for social robots. The `facecue` command is facecue/cli.py."""
from importlib.metadata import PackageNotFoundError, version

from facecue import telemetry as _telemetry  # noqa: F401  (first: no usage reports to library vendors)

try:
    __version__ = version("facecue")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
