"""Configuration: defaults, profiles, overrides, and errors that name the key."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runtime.config import Config, ConfigError, load_config, to_dict

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def test_default_profile_writes_out_every_default():
    """configs/default.yaml lists every key with its default: the raw YAML, not the loaded (defaulted) config."""
    written = yaml.safe_load((CONFIGS / "default.yaml").read_text())
    defaults = to_dict(Config())
    assert list(written) == list(defaults)
    for section, values in defaults.items():
        assert list(written[section]) == list(values), f"default.yaml [{section}] keys differ from runtime/config.py"
        for key, value in values.items():
            assert written[section][key] == value, f"default.yaml {section}.{key}: {written[section][key]!r} != {value!r}"
    assert to_dict(load_config(CONFIGS / "default.yaml")) == defaults


def test_thread_budget_is_every_core_the_process_may_use():
    """0 threads means the affinity mask's cores: a process pinned to one core gets one thread, not os.cpu_count()."""
    code = ("import os; from runtime.backends.onnxruntime import default_intra_op_threads as d; "
            "n = d(); os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); print(n, d(), os.cpu_count())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    before, pinned, count = map(int, result.stdout.split())
    assert (before, pinned) == (len(os.sched_getaffinity(0)), 1) and count >= before


def test_overrides_parse_yaml_scalars():
    config = load_config(None, ["classifier.max_batch=4", "policy.interval=0.5", "source.uri=0",
                                "classifier.model=null", "overlay.show=false", "smoothing.age_centroids=[1, 2, 3]"])
    assert config.classifier.max_batch == 4 and config.policy.interval == 0.5
    assert config.source.uri == "0" and config.classifier.model is None and config.overlay.show is False
    assert config.smoothing.age_centroids == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("override, message", [
    ("classifier.max_batch=x", "classifier.max_batch: expected int, got 'x'"),
    ("classifier.max_batch=true", "classifier.max_batch: expected int, got True"),
    ("policy.interval=[1]", r"policy.interval: expected float, got \[1\]"),
    ("smoothing.age_centroids=[1, a]", r"smoothing.age_centroids\[1\]: expected float, got 'a'"),
    ("classifier.nope=1", "classifier.nope: unknown key"),
    ("nope.key=1", "--set: nope: unknown key"),
    ("source.mode=slow", "source.mode must be 'realtime' or 'fast'"),
    ("classifier.max_batch=0", "classifier.max_batch must be >= 1"),
    ("classifier", "expected section.key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_bad_files_name_the_file_and_key(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("classifier: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(broken)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("tracker:\n  confirm_hits: 3\n  remove_afterr: 2.0\n")
    with pytest.raises(ConfigError, match="wrong.yaml: tracker.remove_afterr: unknown key"):
        load_config(wrong)
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("detector: full_range\n")
    with pytest.raises(ConfigError, match="list.yaml: detector: expected a mapping"):
        load_config(not_mapping)


def test_an_empty_file_is_the_defaults(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert to_dict(load_config(empty)) == to_dict(Config())
