"""The README's Python example, run as written with small inputs (so the documented API stays true)."""

from __future__ import annotations

import re

import torch

from helpers import REPO, golden_dir, realworld


def test_readme_python_example_runs(tmp_path, monkeypatch):
    block = re.search(r"## Python\n\n```python\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    # Same code, small inputs: a 64 px golden generator, a real direction of its width, few steps.
    generator_file = golden_dir("sg2ada_small") / "standin.pkl"
    photo = realworld("photos", "astronaut.png")
    direction = tmp_path / "age.pt"
    torch.save(torch.nn.functional.normalize(torch.randn(1, 64), dim=1), direction)
    code = (block.replace('"ffhq.pkl"', repr(str(generator_file)))
                 .replace('"photo.jpg"', repr(str(photo)))
                 .replace('"age.pt"', repr(str(direction)))
                 # no ImageNet backbones can be had here: the shipped ST-LPIPS weights instead
                 .replace("steps=450", "steps=5, perceptual='stlpips-alex'")
                 .replace("output_size=G.img_resolution", "output_size=G.img_resolution, supersample=256")
                 .replace("TuningConfig(locality=Locality())", "TuningConfig(steps=3, perceptual='stlpips-alex', "
                                                                 "locality=Locality())"))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102  (our own README)
    assert (tmp_path / "edited_photo.png").is_file() and (tmp_path / "tuned.safetensors").is_file()
    assert namespace["edited"].shape == (1, 3, 64, 64)
