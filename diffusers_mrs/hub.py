"""Model cards and Hub publishing for :class:`~diffusers_mrs.MRRestorationPipeline`.

:func:`push_pipeline_to_hub` saves the pipeline folder, renders a model card from the
template in ``diffusers_mrs/model_cards/`` and uploads both in one commit. This module uses
the pipeline; the pipeline never uses it (downloading a pipeline folder is
:mod:`diffusers_mrs.pipeline_folder`). The pipeline's own ``push_to_hub`` and
``save_pretrained(push_to_hub=True)`` are diffusers' unchanged: they upload the same folder
with diffusers' generic card.

Card metadata: ``library_name: diffusers``. The Hub accepts any library name, but only the
libraries it knows get its library filter and their download-counting rules (for diffusers:
``model_index.json``), and the repository *is* a diffusers pipeline folder. The Hub's
generic "Use in Diffusers" snippet (``DiffusionPipeline.from_pretrained``) does not work
for third-party component classes, so the card carries its own working snippet
(``MRRestorationPipeline.from_pretrained``) and the tag ``diffusers-mrs``. Pass
``library_name="diffusers_mrs"`` to opt out.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING, Any

from huggingface_hub import ModelCard, ModelCardData, create_repo, upload_folder

from diffusers_mrs import __version__

if TYPE_CHECKING:
    from diffusers_mrs.pipelines import MRRestorationPipeline

__all__ = [
    "DEFAULT_LIBRARY_NAME",
    "DEFAULT_TAGS",
    "default_template_path",
    "push_pipeline_to_hub",
    "render_model_card",
    "upload_pipeline_folder",
    "write_model_card",
]

#: Tags of every card (extra ``tags`` are appended).
DEFAULT_TAGS = [
    "diffusers",
    "diffusers-mrs",
    "mean-reverting-diffusion",
    "image-restoration",
    "mr-sampler",
    "ir-sde",
]
#: ``library_name`` of the card metadata (see the module docstring).
DEFAULT_LIBRARY_NAME = "diffusers"
DEFAULT_TEMPLATE = "mr_restoration_pipeline.md"
DEFAULT_DESCRIPTION = (
    "Image restoration with a mean-reverting diffusion model (IR-SDE), sampled with the MR Sampler."
)


def default_template_path() -> Path:
    """Path of the pipeline model card template shipped in ``diffusers_mrs.model_cards``."""
    return Path(str(resources.files("diffusers_mrs.model_cards") / DEFAULT_TEMPLATE))


def _jsonable(value: Any) -> Any:
    """Config values as JSON-friendly data (numpy arrays and scalars, tuples)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _config_json(module: Any) -> str:
    config = getattr(module, "config", None) or {}
    public = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    # Infinity stays as JSON's "Infinity", exactly as in the saved config file.
    return json.dumps(_jsonable(public), indent=2, sort_keys=True)


def render_model_card(
    pipe: MRRestorationPipeline,
    repo_id: str | None = None,
    *,
    license: str = "apache-2.0",
    library_name: str = DEFAULT_LIBRARY_NAME,
    tags: list[str] | None = None,
    base_model: str | list[str] | None = None,
    datasets: str | list[str] | None = None,
    model_name: str | None = None,
    description: str | None = None,
    training_details: str | None = None,
    num_inference_steps: int = 10,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """Renders the model card of an ``MRRestorationPipeline``.

    Args:
        pipe: the pipeline (its ``unet`` and ``scheduler`` configs go into the card).
        repo_id: the Hub repo id used in the usage snippet (default: a placeholder).
        license: license identifier of the weights (card metadata).
        library_name: card metadata ``library_name`` (see the module docstring).
        tags: extra tags, appended to :data:`DEFAULT_TAGS`.
        base_model, datasets: optional card metadata.
        model_name: title of the card (default: the repo name).
        description: first paragraph of the card.
        training_details: optional "Training" section text.
        num_inference_steps: the step count shown in the usage snippet.
        template_path: a Jinja template to use instead of the shipped one.

    Returns:
        A ``huggingface_hub.ModelCard`` (``card.save(path)`` writes ``README.md``).
    """
    repo = repo_id or "<user>/<repo>"
    all_tags = list(DEFAULT_TAGS) + [t for t in (tags or []) if t not in DEFAULT_TAGS]
    card_data = ModelCardData(
        library_name=library_name,
        license=license,
        pipeline_tag="image-to-image",
        tags=all_tags,
        base_model=base_model,
        datasets=datasets,
    )
    unet, scheduler = pipe.unet, pipe.scheduler
    num_parameters = sum(p.numel() for p in unet.parameters()) if hasattr(unet, "parameters") else 0
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path or default_template_path()),
        repo_id=repo,
        model_name=model_name or repo.split("/")[-1],
        description=description or DEFAULT_DESCRIPTION,
        training_details=training_details,
        num_inference_steps=int(num_inference_steps),
        scheduler_class=type(scheduler).__name__,
        scheduler_config=_config_json(scheduler),
        unet_class=type(unet).__name__,
        unet_config=_config_json(unet),
        num_parameters=f"{num_parameters:,}",
        diffusers_mrs_version=__version__,
    )


def write_model_card(
    pipe: MRRestorationPipeline,
    save_directory: str | os.PathLike,
    repo_id: str | None = None,
    **card_kwargs: Any,
) -> Path:
    """Renders the model card and writes it to ``save_directory/README.md``; returns the path."""
    path = Path(save_directory) / "README.md"
    render_model_card(pipe, repo_id, **card_kwargs).save(path)
    return path


def _upload(
    pipe: MRRestorationPipeline,
    folder: str | os.PathLike,
    repo_id: str,
    commit_message: str | None,
    token: str | None,
    create_pr: bool,
    card_kwargs: dict[str, Any],
) -> Any:
    write_model_card(pipe, folder, repo_id, **card_kwargs)
    return upload_folder(
        repo_id=repo_id,
        folder_path=os.fspath(folder),
        commit_message=commit_message or f"Upload {type(pipe).__name__}",
        token=token,
        create_pr=create_pr,
    )


def upload_pipeline_folder(
    pipe: MRRestorationPipeline,
    folder: str | os.PathLike,
    repo_id: str,
    *,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    create_pr: bool = False,
    **card_kwargs: Any,
) -> Any:
    """Writes the model card into an already saved pipeline ``folder`` and uploads the folder.

    Creates the repo if needed. ``card_kwargs`` go to :func:`render_model_card`. Returns the
    ``CommitInfo`` of the upload.
    """
    repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    return _upload(pipe, folder, repo_id, commit_message, token, create_pr, card_kwargs)


def push_pipeline_to_hub(
    pipe: MRRestorationPipeline,
    repo_id: str,
    *,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    create_pr: bool = False,
    safe_serialization: bool = True,
    variant: str | None = None,
    **card_kwargs: Any,
) -> Any:
    """Saves ``pipe`` to a temporary folder, adds the rendered model card and uploads it.

    The upload is one commit with
    ``model_index.json``, the component folders and ``README.md``. ``card_kwargs`` go to
    :func:`render_model_card` (``license``, ``base_model``, ``datasets``, ...). Returns the
    ``CommitInfo``.
    """
    repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    with TemporaryDirectory() as tmp:
        pipe.save_pretrained(tmp, safe_serialization=safe_serialization, variant=variant)
        return _upload(pipe, tmp, repo_id, commit_message, token, create_pr, card_kwargs)
