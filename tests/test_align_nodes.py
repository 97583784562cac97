"""PTI_AlignFace / PTI_PasteBack nodes: metadata contracts and an align -> paste-back round trip."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from helpers import REPO, realworld
from pti_core import imageio, metrics

NODE_IDS = ("PTI_AlignFace", "PTI_PasteBack")


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """The astronaut as ComfyUI IMAGE [1, 512, 512, 3] in 0..1."""
    return imageio.nchw_to_comfy(imageio.load_image(realworld("photos", "astronaut.png")))


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_node_metadata(pack, node_id):
    cls = pack.NODE_CLASS_MAPPINGS[node_id]
    assert pack.NODE_DISPLAY_NAME_MAPPINGS[node_id]
    assert cls.CATEGORY == "PTI" and cls.DESCRIPTION and cls.FUNCTION == "execute"
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
    inputs = cls.INPUT_TYPES()["required"]
    for name, spec in inputs.items():
        assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    assert list(inputs) == {
        "PTI_AlignFace": ["image", "face_pick", "face_index", "output_size", "supersample"],
        "PTI_PasteBack": ["photo", "edited", "face_align", "feather"],
    }[node_id]  # widget order is a saved-workflow contract


def test_pack_import_does_not_load_dlib():
    code = ("import sys; sys.path.insert(0, 'tests'); from helpers import load_pack; pack = load_pack(); "
            "assert 'PTI_AlignFace' in pack.NODE_CLASS_MAPPINGS; "
            "assert 'dlib' not in sys.modules and 'kornia' not in sys.modules, 'heavy import at load'; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


def test_align_then_paste_back_round_trip(pack, photo):
    align = pack.NODE_CLASS_MAPPINGS["PTI_AlignFace"]()
    paste = pack.NODE_CLASS_MAPPINGS["PTI_PasteBack"]()
    aligned, face_align = align.execute(photo, "score", 0, 256, 1024)
    assert aligned.shape == (1, 256, 256, 3) and aligned.dtype == torch.float32
    assert 0 <= float(aligned.min()) and float(aligned.max()) <= 1
    assert torch.allclose(aligned, imageio.nchw_to_comfy(face_align.image))
    (restored,) = paste.execute(photo, aligned, face_align, 0.1)
    assert restored.shape == photo.shape
    left, top, right, bottom = (int(round(v)) for v in face_align.face_box)
    face = (slice(None), slice(top, bottom), slice(left, right))
    psnr = metrics.psnr(imageio.comfy_to_nchw(restored[face]), imageio.comfy_to_nchw(photo[face]))
    assert float(psnr) >= 30
    assert torch.equal(restored[:, 470:, :40], photo[:, 470:, :40])  # far from the face: untouched

    # an edit sweep: several edited frames into one photo give one photo per frame
    frames = torch.stack([aligned[0], 1 - aligned[0], aligned[0] * 0.5])
    (sweep,) = paste.execute(photo, frames, face_align, 0.1)
    assert sweep.shape == (3, 512, 512, 3)
    assert torch.allclose(sweep[0], restored[0])
    assert (sweep[1] - photo[0]).abs()[top:bottom, left:right].mean() > 0.2  # the face was replaced


def test_batch_of_photos(pack, photo):
    align = pack.NODE_CLASS_MAPPINGS["PTI_AlignFace"]()
    paste = pack.NODE_CLASS_MAPPINGS["PTI_PasteBack"]()
    photos = torch.cat([photo, photo.flip(2)])  # the astronaut and her mirror image
    aligned, faces = align.execute(photos, "score", 0, 64, 0)
    assert aligned.shape == (2, 64, 64, 3) and len(faces) == 2
    assert faces[0].face_box[0] != faces[1].face_box[0]
    assert (aligned[1] - aligned[0].flip(1)).abs().mean() < 0.05  # mirrored crops (up to landmark noise)
    assert (aligned[1] - aligned[0]).abs().mean() > 2 * (aligned[1] - aligned[0].flip(1)).abs().mean()
    (restored,) = paste.execute(photos, aligned, faces, 0.1)
    assert restored.shape == photos.shape


def test_node_errors_are_one_line(pack):
    align = pack.NODE_CLASS_MAPPINGS["PTI_AlignFace"]()
    with pytest.raises(ValueError, match="image: no face found") as info:
        align.execute(torch.full((1, 96, 128, 3), 0.5), "score", 0, 64, 0)
    assert "\n" not in str(info.value)
    paste = pack.NODE_CLASS_MAPPINGS["PTI_PasteBack"]()
    with pytest.raises(ValueError, match="aligned on a"):
        _, face_align = align.execute(imageio.nchw_to_comfy(imageio.load_image(realworld("photos", "astronaut.png"))),
                                      "score", 0, 64, 0)
        paste.execute(torch.zeros(1, 100, 100, 3), torch.zeros(1, 64, 64, 3), face_align, 0.1)
