"""Fine-tuning and evaluation: the thesis' recipes on a user's own labelled faces (torch; not the runtime)."""
from facecue import telemetry as _telemetry  # noqa: F401  (first: no usage reports to library vendors)
