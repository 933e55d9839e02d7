"""CLIP score as a fitness metric: how well each image matches its prompt (torchmetrics' ``CLIPScore``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, ModelLoadError, first_line
from ..frames import frames_as_images
from ._base import Evaluator, FitnessMeter, to_uint8


class _ProjectedFeatures(torch.nn.Module):
    """A CLIPModel whose ``get_image_features``/``get_text_features`` return the projected embeddings.

    transformers 5 returns a ``BaseModelOutputWithPooling`` there (the embeddings as its ``pooler_output``);
    torchmetrics 1.9's ``CLIPScore`` expects the tensor that transformers 4 returned.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    @staticmethod
    def _tensor(output: Any) -> torch.Tensor:
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    def get_image_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self._tensor(self.model.get_text_features(*args, **kwargs))


def load_clip(folder: str | Path) -> tuple[Any, Any]:
    """``(CLIPModel, CLIPProcessor)`` from a local folder (``save_pretrained`` of both), or a one-line error."""
    from transformers import CLIPModel, CLIPProcessor

    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ModelLoadError(f"CLIP folder {path} does not exist (fitness.clip_model: a folder with a CLIPModel and its processor)")
    try:
        model = CLIPModel.from_pretrained(path).eval().requires_grad_(False)
        processor = CLIPProcessor.from_pretrained(path)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ModelLoadError(f"cannot load a CLIP model and processor from {path}: {first_line(error)}") from None
    return model, processor


class ClipScoreFitness(FitnessMeter):
    """``-CLIPScore`` of a plan's images against their prompts (sample i: prompt ``i mod N``).

    torchmetrics' ``CLIPScore`` is ``max(100 cos(image, text), 0)`` averaged over images; it is negated
    so that lower is better. Needs a text-to-image pipeline model (one with prompts).

    Args:
        folder: a local folder holding a ``CLIPModel`` and its ``CLIPProcessor`` (e.g. a downloaded
            ``openai/clip-vit-large-patch14``).
    """

    metric = "clip-score"
    label = "-CLIP score"

    def __init__(self, folder: str | Path) -> None:
        from torchmetrics.multimodal.clip_score import CLIPScore

        model, processor = load_clip(folder)
        self.folder = Path(folder)
        self.score = CLIPScore(model_name_or_path=lambda: (_ProjectedFeatures(model), processor))
        self.prompts: Any = None

    def bind(self, evaluator: Evaluator) -> None:
        prompts = evaluator.generator.prompts
        if prompts is None:
            raise ConfigError(
                f"fitness.metric = clip-score needs a text-to-image pipeline with prompts; {evaluator.model.source} has none"
            )
        self.prompts = prompts
        self.score = self.score.to(evaluator.model.device)

    def begin(self, num_samples: int) -> None:
        self.score.reset()

    @torch.inference_mode()
    def update(self, samples: torch.Tensor, start: int, stop: int) -> None:
        frames, per_sample = frames_as_images(samples)  # a video: each frame against its prompt
        images = to_uint8(frames)
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        texts = [text for text in self.prompts.texts(start, stop) for _ in range(per_sample)]
        self.score.update(list(images), texts)

    @torch.inference_mode()
    def compute(self) -> float:
        return -float(self.score.compute())
