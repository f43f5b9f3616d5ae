"""`gte export OUT --push REPO`: upload an export folder to the Hugging Face Hub through huggingface_hub's own
upload (create_repo + upload_folder), after the folder is complete. Without a network (HF_HUB_OFFLINE) or a token,
or when the upload fails, the export stays where it is and one line says how to push it later.

  gte export runs/quickstart/export runs/minilm-hub --onnx int8 --push my-user/my-gte-model
"""

from __future__ import annotations

import os
from pathlib import Path

from gte_model.core.errors import UserError

# Never uploaded: our owner marker and local evaluation folders (their numbers are in the card already).
IGNORED = [".gte-owner", "eval/**", "eval-*/**"]
_TRUE = {"1", "on", "yes", "true"}


def push_folder(folder: str | Path, repo_id: str, private: bool = False) -> str:
    """Upload folder to the model repo repo_id (created if missing); returns the commit URL."""
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError

    later = f"the export is at {folder}; push it later with `hf upload {repo_id} {folder}`"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE or huggingface_hub.is_offline_mode():
        raise UserError(f"--push {repo_id}: HF_HUB_OFFLINE is set, so there is no network to upload through; {later} "
                        "where a network exists (HF_HUB_OFFLINE unset)")
    token = huggingface_hub.get_token()
    if not token:
        raise UserError(f"--push {repo_id}: no Hugging Face token (HF_TOKEN, or `hf auth login`); {later} once "
                        "one is set")
    network_errors: tuple[type[BaseException], ...] = (HfHubHTTPError, OSError)
    try:
        import httpx

        network_errors += (httpx.HTTPError,)
    except ImportError:
        pass
    try:
        api = huggingface_hub.HfApi(token=token)
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 ignore_patterns=IGNORED, commit_message="gte export")
    except network_errors as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"--push {repo_id}: the upload failed ({first}); {later}") from exc
    return str(getattr(info, "commit_url", info))
