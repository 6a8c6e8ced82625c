"""Model card rendering and the push -> from_pretrained round trip against a local Hub server.

huggingface_hub reads ``HF_ENDPOINT`` when it is imported, so the client side runs in a
subprocess whose environment points at the :class:`hub_server.HubServer` started here (on
127.0.0.1; the tests otherwise run with ``HF_HUB_OFFLINE=1``, lifted only for that child).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard

from diffusers_mrs import MRRestorationPipeline, MRSamplerScheduler, MRUNet2DModel
from diffusers_mrs.hub import DEFAULT_TAGS, default_template_path, render_model_card

from hub_server import HubServer

REPO = "test-user/mrs-tiny"


def tiny_pipeline() -> MRRestorationPipeline:
    torch.manual_seed(0)
    unet = MRUNet2DModel(nf=8, depth=2, attention_heads=1, attention_head_dim=8)
    with torch.no_grad():
        unet.conv_out.weight.normal_(0.0, 0.05)
        unet.conv_out.bias.fill_(0.5)
    sched = MRSamplerScheduler(prediction_type="sample", solver_order=3, algorithm_type="ode")
    return MRRestorationPipeline(unet=unet, scheduler=sched)


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---", 2)[1])


def python_blocks(markdown: str) -> list[str]:
    return [block.split("```", 1)[0] for block in markdown.split("```python\n")[1:]]


# ----------------------------------------------------------------------------- the card
def test_template_is_shipped() -> None:
    path = default_template_path()
    assert path.is_file() and path.parent.name == "model_cards"
    assert "{{ card_data }}" in path.read_text()


def test_render_model_card() -> None:
    pipe = tiny_pipeline()
    card = render_model_card(pipe, REPO, license="mit", tags=["denoising"], datasets="some/data")
    meta = front_matter(card.content)
    assert meta["library_name"] == "diffusers"
    assert meta["pipeline_tag"] == "image-to-image"
    assert meta["license"] == "mit"
    assert meta["datasets"] == "some/data"
    assert meta["tags"] == [*DEFAULT_TAGS, "denoising"]
    for tag in ("mean-reverting-diffusion", "image-restoration", "mr-sampler", "diffusers"):
        assert tag in meta["tags"]
    text = card.text
    assert f'MRRestorationPipeline.from_pretrained("{REPO}")' in text
    assert "Scheduler: `MRSamplerScheduler`" in text
    # The sampler config is in the card, as JSON equal to the scheduler's config.
    sched_json = text.split("Scheduler: `MRSamplerScheduler`", 1)[1].split("```json\n", 1)[1]
    sched_config = json.loads(sched_json.split("```", 1)[0])
    assert sched_config["solver_order"] == 3 and sched_config["algorithm_type"] == "ode"
    assert sched_config == {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in pipe.scheduler.config.items()
        if not k.startswith("_")
    }
    assert "MRUNet2DModel" in text and '"nf": 8' in text
    # The snippets are valid Python, and the card parses back.
    for block in python_blocks(text):
        compile(block, "<card>", "exec")
    assert ModelCard(card.content).data.pipeline_tag == "image-to-image"
    # A library name of one's own.
    other = render_model_card(pipe, REPO, library_name="diffusers_mrs")
    assert front_matter(other.content)["library_name"] == "diffusers_mrs"


# ----------------------------------------------------------------------------- round trip
CLIENT = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import torch
    from PIL import Image
    from huggingface_hub import ModelCard, hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError

    from diffusers_mrs import MRRestorationPipeline
    from diffusers_mrs.hub import push_pipeline_to_hub
    sys.path.insert(0, sys.argv[1])
    from test_hub import REPO, python_blocks, tiny_pipeline

    work = sys.argv[2]
    report = {}
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    info = push_pipeline_to_hub(pipe, REPO, license="mit")
    report["commit"] = info.oid

    loaded = MRRestorationPipeline.from_pretrained(REPO)
    loaded.set_progress_bar_config(disable=True)
    report["name_or_path"] = loaded.name_or_path
    report["classes"] = [type(loaded.unet).__name__, type(loaded.scheduler).__name__]
    a, b = pipe.unet.state_dict(), loaded.unet.state_dict()
    report["same_weights"] = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    def public(config):
        return json.dumps({k: v for k, v in config.items() if not k.startswith("_")},
                          sort_keys=True)
    report["same_scheduler"] = public(pipe.scheduler.config) == public(loaded.scheduler.config)
    x = torch.rand(1, 3, 19, 23, generator=torch.Generator().manual_seed(0))
    ref = pipe(x, num_inference_steps=3, generator=torch.Generator().manual_seed(1),
               output_type="pt").images
    out = loaded(x, num_inference_steps=3, generator=torch.Generator().manual_seed(1),
                 output_type="pt").images
    report["max_output_diff"] = float((ref - out).abs().max())

    # From the cache only.
    cached = MRRestorationPipeline.from_pretrained(REPO, local_files_only=True)
    report["cached_classes"] = [type(cached.unet).__name__, type(cached.scheduler).__name__]

    card = ModelCard.load(REPO)
    report["card"] = card.data.to_dict()

    # The usage snippet of the card runs as written.
    os.chdir(work)
    Image.fromarray(np.full((16, 20, 3), 128, np.uint8)).save("degraded.png")
    snippet = next(b for b in python_blocks(card.text) if "from_pretrained" in b)
    exec(compile(snippet, "README.md", "exec"), {})
    report["snippet_output"] = Image.open("restored.png").size

    # save_pretrained(push_to_hub=True) also writes and uploads the card; no namespace given.
    pipe.save_pretrained(os.path.join(work, "saved"), push_to_hub=True, repo_id="mrs-second")
    report["saved_readme"] = os.path.isfile(os.path.join(work, "saved", "README.md"))

    try:
        MRRestorationPipeline.from_pretrained("test-user/does-not-exist")
    except RepositoryNotFoundError:
        report["missing_repo"] = "RepositoryNotFoundError"
    print("REPORT " + json.dumps(report))
    """
)


@pytest.mark.slow
def test_push_and_from_pretrained_round_trip(tmp_path: Path) -> None:
    with HubServer() as hub:
        env = dict(os.environ)
        env.update(
            HF_ENDPOINT=hub.url,
            HF_HUB_OFFLINE="0",
            HF_HOME=str(tmp_path / "hf_home"),
            HF_HUB_CACHE=str(tmp_path / "hf_home" / "hub"),
            HF_TOKEN="hf_test_token",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
        )
        work = tmp_path / "work"
        work.mkdir()
        proc = subprocess.run(
            [sys.executable, "-c", CLIENT, str(Path(__file__).parent), str(work)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT "))
        report = json.loads(line[len("REPORT ") :])

        files = hub.files(REPO)
        second = hub.files("test-user/mrs-second")
        requests = list(hub.requests)

    # One commit with the pipeline folder and the card.
    assert {
        "README.md",
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
    } <= set(files)
    assert ("POST", f"/api/models/{REPO}/commit/main") in requests
    index = json.loads(files["model_index.json"])
    assert index["unet"] == ["diffusers_mrs", "MRUNet2DModel"]
    assert index["scheduler"] == ["diffusers_mrs", "MRSamplerScheduler"]
    meta = front_matter(files["README.md"].decode())
    assert meta["pipeline_tag"] == "image-to-image" and meta["license"] == "mit"
    assert "README.md" in second and "model_index.json" in second

    assert report["name_or_path"] == REPO
    assert report["classes"] == ["MRUNet2DModel", "MRSamplerScheduler"]
    assert report["cached_classes"] == report["classes"]
    assert report["same_weights"] and report["same_scheduler"]
    assert report["max_output_diff"] < 1e-5
    assert report["card"]["library_name"] == "diffusers"
    assert "mr-sampler" in report["card"]["tags"]
    assert report["snippet_output"] == [20, 16]
    assert report["saved_readme"]
    assert report["missing_repo"] == "RepositoryNotFoundError"
