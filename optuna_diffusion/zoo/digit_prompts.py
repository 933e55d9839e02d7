"""The prompt language of the bundled text-to-image model ``digits-t2i``.

A prompt names a digit, in words or as a numeral ("a handwritten seven", "the number 7"), and may
describe two visual attributes measured from the image itself, each relative to the other images of
the same digit (so that every digit has thin and thick, slanted and backslanted examples):

* **thickness**, from the ink mass (sum of pixel intensities): the lightest third of a digit's images
  are "thin", the heaviest third "thick";
* **slant**, from the image moments: the horizontal shift per row of the ink's principal axis
  (-mu11 / mu02, positive when the top leans right); the most right-leaning third are "slanted", the
  most left-leaning third "backslanted", the rest "upright".

Training draws a caption per image and step from :func:`caption`; the shipped prompt file holds
prompts drawn from the same language (:func:`prompt_lines`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .data import NUM_CLASSES

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
THICKNESS_WORDS = ("thin", "thick")
SLANT_WORDS = ("backslanted", "upright", "slanted")
TEMPLATE_WORDS = ("a", "an", "the", "handwritten", "number", "digit", ",")


@dataclass(frozen=True)
class Attributes:
    """Measured attributes of one image: thickness and slant words (None: not remarkable)."""

    thickness: str | None
    slant: str


def ink_mass(images: torch.Tensor) -> torch.Tensor:
    """Sum of ink (pixel intensity mapped to [0, 1]) of each image of ``(N, 1, H, W)`` in [-1, 1]."""
    return ((images + 1) / 2).sum(dim=(1, 2, 3))


def slant(images: torch.Tensor) -> torch.Tensor:
    """Horizontal shift per row of each image's ink axis (-mu11 / mu02; > 0 when the top leans right)."""
    ink = ((images[:, 0] + 1) / 2).clamp_min(0)
    height, width = ink.shape[-2:]
    rows, cols = torch.meshgrid(torch.arange(float(height)), torch.arange(float(width)), indexing="ij")
    total = ink.sum(dim=(1, 2)).clamp_min(1e-6)
    centre_x = (ink * cols).sum(dim=(1, 2)) / total
    centre_y = (ink * rows).sum(dim=(1, 2)) / total
    dx = cols - centre_x[:, None, None]
    dy = rows - centre_y[:, None, None]
    mu11 = (ink * dx * dy).sum(dim=(1, 2)) / total
    mu02 = (ink * dy * dy).sum(dim=(1, 2)) / total
    return -mu11 / mu02.clamp_min(1e-6)


def measure_attributes(images: torch.Tensor, labels: torch.Tensor) -> list[Attributes]:
    """Thickness and slant words of every image, by terciles within its digit."""
    mass, lean = ink_mass(images), slant(images)
    attributes: list[Attributes | None] = [None] * len(images)
    for digit in range(NUM_CLASSES):
        index = (labels == digit).nonzero().flatten()
        if len(index) == 0:
            continue
        mass_low, mass_high = torch.quantile(mass[index], torch.tensor([1 / 3, 2 / 3]))
        lean_low, lean_high = torch.quantile(lean[index], torch.tensor([1 / 3, 2 / 3]))
        for i in index.tolist():
            thickness = "thin" if mass[i] <= mass_low else "thick" if mass[i] >= mass_high else None
            slant_word = "backslanted" if lean[i] <= lean_low else "slanted" if lean[i] >= lean_high else "upright"
            attributes[i] = Attributes(thickness, slant_word)
    return attributes  # type: ignore[return-value]


def _with_article(words: list[str]) -> str:
    article = "an" if words[0][0] in "aeiou8" else "a"
    return " ".join([article, *words])


def caption(digit: int, attributes: Attributes | None, rng: random.Random) -> str:
    """A random caption of ``digit``; with ``attributes``, each is mentioned with probability one half."""
    word, numeral = DIGIT_WORDS[digit], str(digit)
    adjectives = []
    if attributes is not None:
        if attributes.thickness is not None and rng.random() < 0.5:
            adjectives.append(attributes.thickness)
        if rng.random() < 0.5:
            adjectives.append(attributes.slant)
    described = ", ".join(adjectives)
    name = rng.choice((word, numeral))
    if not adjectives:
        return rng.choice((f"a handwritten {word}", f"the number {numeral}", f"the digit {word}", _with_article([name])))
    return rng.choice((
        _with_article([described, name]),
        _with_article([described, "handwritten", word]),
        f"the number {numeral}, {described}",
    ))


def prompt_lines(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct prompts of the language, balanced over the digits, in a seeded order."""
    rng = random.Random(seed)
    combos = [Attributes(t, s) for t in (None, *THICKNESS_WORDS) for s in SLANT_WORDS]
    prompts: list[str] = []
    seen: set[str] = set()
    digit = 0
    while len(prompts) < count:
        text = caption(digit, rng.choice(combos + [None]), rng)
        if text not in seen:
            seen.add(text)
            prompts.append(text)
            digit = (digit + 1) % NUM_CLASSES
    return prompts


def digit_of_prompt(text: str) -> int:
    """The digit a prompt of the language names (its word or numeral)."""
    for token in text.replace(",", " ").split():
        if token in DIGIT_WORDS:
            return DIGIT_WORDS.index(token)
        if token.isdigit() and len(token) == 1:
            return int(token)
    raise ValueError(f"prompt names no digit: {text!r}")


def language_words() -> list[str]:
    """Every word (and punctuation token) a prompt of the language can contain."""
    numerals = [str(d) for d in range(NUM_CLASSES)]
    return sorted(set(DIGIT_WORDS) | set(numerals) | set(THICKNESS_WORDS) | set(SLANT_WORDS) | set(TEMPLATE_WORDS))
