"""Models from the Hugging Face hub: loaded online, from the local cache offline, or a clear
error at once.

Offline (no network, or ``HF_HUB_OFFLINE`` set) a hub id still loads when the local cache holds
it (``hf download REPO`` on a machine with a network puts it there). When it does not, the
course says so at once and how to get the model: left to itself, diffusers' ``from_pretrained``
retries the network for about 20 seconds and then reports that the repository "does not appear
to have a file named config.json".
"""

from __future__ import annotations

from pathlib import Path


class HubUnavailable(ConnectionError):
    """A hub model that cannot load here: the hub is out of reach and the cache has no copy.

    ``reason`` is the short form, for a lesson's "skipped: ..." line."""

    def __init__(self, repo: str, alternatives: str = ""):
        self.repo = repo
        self.reason = (f"it needs the Hugging Face hub, which this run cannot reach, and the "
                       f"local cache has no copy of {repo} (to make one: `hf download {repo}` "
                       f"on a machine with a network)")
        super().__init__(
            f"{repo!r} is not a folder here, and the Hugging Face hub cannot be reached (no "
            f"network, or HF_HUB_OFFLINE is set) to download it; the local Hugging Face cache "
            f"(under HF_HOME, by default ~/.cache/huggingface) has no copy either. To get it, on "
            f"a machine with a network: `hf download {repo}` fills that cache (copy it here, or "
            f"set HF_HOME to where it is), or `hf download {repo} --local-dir DIR` makes a "
            f"folder DIR to load instead of the id." + (f" Offline, these load: {alternatives}."
                                                         if alternatives else ""))


def hub_access(repo: str, revision: str | None = None, alternatives: str = "") -> dict:
    """``from_pretrained``'s keywords for ``repo`` (a hub id of a pipeline, or a folder),
    decided up front.

    A folder, or a hub that answers: none. Offline, with the pipeline in the local cache:
    ``local_files_only=True`` (no network attempt). Offline without it: HubUnavailable, at once;
    ``repo`` neither a folder nor a valid hub id: FileNotFoundError.
    """
    from diffusers import DiffusionPipeline

    from ..device import hub_reachable

    if Path(repo).expanduser().is_dir() or hub_reachable():
        return {}
    try:
        DiffusionPipeline.download(repo, revision=revision, local_files_only=True)
    except ValueError:  # huggingface_hub's HFValidationError: not an owner/name id
        known = f"; these load offline: {alternatives}" if alternatives else ""
        raise FileNotFoundError(f"{repo!r} is neither a folder here nor a hub id "
                                f"(owner/name){known}") from None
    except OSError:  # not in the cache (LocalEntryNotFoundError)
        raise HubUnavailable(repo, alternatives) from None
    return {"local_files_only": True}
