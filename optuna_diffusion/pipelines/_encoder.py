"""Prompt embeddings of a pipeline model, computed once per distinct prompt and kept."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import ConfigError
from ..prompts import PromptSet

if TYPE_CHECKING:
    from ..protocols import ModelLike as DiffusionModel  # what a family reads of models.DiffusionModel

Embeddings = dict[str, torch.Tensor]


class PromptEncoder:
    """Runs a pipeline model's text encoders (through its family's ``encode``) once per distinct prompt.

    Embeddings are kept on the model's device for the life of the encoder (they do not depend on the
    plan), for prompts and negative prompts separately; a negative prompt of None stands for the
    pipeline's default unconditional pass.

    Attributes:
        encoder_calls: how many prompts (and negative prompts) were encoded so far.
    """

    def __init__(self, model: DiffusionModel) -> None:
        self.model = model
        self._positive: dict[str, Embeddings] = {}
        self._negative: dict[str | None, Embeddings] = {}
        self.encoder_calls = 0
        self.released = False
        """Whether the text encoders were freed (:meth:`release`): only cached prompts can be had then."""

    def positive(self, text: str) -> Embeddings:
        """Embeddings of prompt ``text`` (batch 1 each)."""
        if text not in self._positive:
            self._check_encoders(text)
            self._positive[text] = self._encode(lambda: self.model.family.encode(self.model, text))
        return self._positive[text]

    def negative(self, text: str | None) -> Embeddings:
        """Embeddings of the unconditional pass with negative prompt ``text`` (None: the pipeline's default)."""
        if text not in self._negative:
            self._check_encoders("" if text is None else text)
            self._negative[text] = self._encode(lambda: self.model.family.encode_negative(self.model, text))
        return self._negative[text]

    def _check_encoders(self, text: str) -> None:
        if self.released:
            raise ConfigError(
                f"the text encoders of {self.model.source} were freed after encoding the study's prompts; "
                f"{text!r} is not among them (load the model again to encode other prompts)"
            )

    def encode_all(self, prompts: PromptSet, *, negatives: bool) -> None:
        """Encode every prompt of ``prompts`` now (and its negative prompt, when ``negatives``: under guidance)."""
        for index in range(len(prompts)):
            self.positive(prompts[index].text)
            if negatives:
                self.negative(prompts[index].negative)

    def release(self) -> tuple[str, ...]:
        """Free the pipeline's text encoders and tokenizers: drop every reference the model holds to them.

        Call it once every prompt the search needs is encoded (:meth:`encode_all`): the embeddings stay,
        and encoding another prompt is a one-line ConfigError. Returns the names of the components dropped.
        """
        from ._macs import TEXT_ENCODERS

        pipeline = self.model.pipeline
        dropped = []
        for name in (*TEXT_ENCODERS, "tokenizer", "tokenizer_2", "tokenizer_3"):
            if getattr(pipeline, name, None) is not None:
                # DiffusionPipeline.__setattr__ also records the component as (None, None) in its config.
                setattr(pipeline, name, None)
                dropped.append(name)
        self.released = True
        return tuple(dropped)

    def _encode(self, encode) -> Embeddings:
        with torch.no_grad():
            embeddings = encode()
        self.encoder_calls += 1
        return {key: value.detach() for key, value in embeddings.items()}

    def bind(self, prompts: PromptSet) -> "EncodedPrompts":
        """``prompts`` seen through this encoder (what the image generator hands to the family)."""
        return EncodedPrompts(prompts, self)

    def clear(self) -> None:
        """Forget every embedding (e.g. after the text encoders changed)."""
        self._positive.clear()
        self._negative.clear()

    @property
    def cached(self) -> int:
        """How many prompt and negative-prompt embeddings are kept."""
        return len(self._positive) + len(self._negative)


class EncodedPrompts:
    """A prompt set with its embeddings by prompt index, encoded on first use through a :class:`PromptEncoder`."""

    def __init__(self, prompts: PromptSet, encoder: PromptEncoder) -> None:
        if not isinstance(prompts, PromptSet):
            raise ConfigError(f"prompts must be a PromptSet, got {type(prompts).__name__}")
        self.prompts = prompts
        self.encoder = encoder

    def positive(self, index: int) -> Embeddings:
        """Embeddings of prompt ``index``."""
        return self.encoder.positive(self.prompts[index].text)

    def negative(self, index: int) -> Embeddings:
        """Embeddings of prompt ``index``'s unconditional pass."""
        return self.encoder.negative(self.prompts[index].negative)
