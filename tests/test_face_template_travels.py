"""The face framing a generator was trained with travels with it: file -> G -> tuned copy -> file."""

from __future__ import annotations

import copy

import torch

from pti_core import distill, load_generator, save_generator
from pti_core.align import FFHQ_TEMPLATE, generator_template
from helpers import tiny_generator


def test_template_survives_load_copy_and_save(tmp_path):
    G = load_generator(distill.DEFAULT_MODEL_PATH)
    template = generator_template(G)
    assert template == distill.face_template_for(distill.DEFAULT_MODEL_PATH) != FFHQ_TEMPLATE
    tuned = copy.deepcopy(G)  # what pivotal_tune returns is a deep copy
    with torch.no_grad():
        tuned.synthesis.b4.conv1.bias.add_(0.1)
    path = save_generator(tuned, tmp_path / "tuned.safetensors")
    assert generator_template(load_generator(path)) == template


def test_generators_without_a_template_use_ffhq(tmp_path):
    path = save_generator(tiny_generator(0), tmp_path / "plain.safetensors")
    assert generator_template(load_generator(path)) == FFHQ_TEMPLATE
