"""Image processor of Video-LaVIT: keyframes and images to the visual tokenizer's pixel values."""

from transformers.image_processing_backends import PilBackend
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling


class VideoLaVITImageProcessor(PilBackend):
    r"""Resize to 224 x 224 (bicubic, PIL), scale to [0, 1] and normalise with the CLIP mean and std.

    This is the original's evaluation transform for images and video keyframes (no crop: the aspect
    ratio is not kept). It works on PIL images or NumPy arrays only (no torchvision).

    Example:

    ```python
    >>> from PIL import Image
    >>> processor = VideoLaVITImageProcessor()
    >>> processor(Image.new("RGB", (320, 240)), return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 3, 224, 224])
    ```

    Returns (from `__call__`): a `BatchFeature` whose `pixel_values` is `[num_images, 3, 224, 224]`.
    """

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = False
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True


__all__ = ["VideoLaVITImageProcessor"]
