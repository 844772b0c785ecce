"""The shipped YAML profiles (default, laptop, jetson-orin, calibration, models/*, train/*), installed with the
package so `--config laptop` and `load_config("laptop")` work from any folder (runtime.config.profile_path)."""
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
