"""Before timm downloads published weights: are they cached, or does the Hugging Face Hub answer at all?

timm downloads through huggingface_hub, which retries a failed request five times with backoff (about a
minute without a network) before it reports that the file is not cached. One request without retries
(`get_hf_file_metadata`, the call huggingface_hub itself makes first) tells sooner; it goes through
huggingface_hub, so its cache, HF_ENDPOINT, proxies and HF_HUB_OFFLINE work as usual.
"""
from __future__ import annotations

import timm

from export.errors import CheckpointError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # the files timm looks for in a Hub repository


def check_hub_weights(pretrained_name: str, hint: str) -> None:
    """Return when timm can get `pretrained_name` (cached, or the Hub answers); else a CheckpointError ending
    in `hint` (what to set instead), at once."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError

    hub_id = timm.models.get_pretrained_cfg(pretrained_name).hf_hub_id
    if hub_id is None:
        return  # not on the Hub: timm's own download
    repo, _, revision = hub_id.partition("@")
    if any(isinstance(try_to_load_from_cache(repo, name, revision=revision or None), str) for name in WEIGHT_FILES):
        return
    try:
        get_hf_file_metadata(hf_hub_url(repo, WEIGHT_FILES[0], revision=revision or None))
    except HfHubHTTPError:
        return  # the Hub answered (a 404 for one of the names, say): timm takes it from here
    except Exception as error:  # offline mode, DNS, refused, timeout: no common base class
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else f"the Hub cannot be reached ({error})"
        raise CheckpointError(f"timm pretrained weights {pretrained_name!r} are not in the Hugging Face cache and "
                              f"{why}; {hint}") from None
