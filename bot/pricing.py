"""Model prices (``config/pricing.yaml``) and the cost estimate of token counts.

Prices live in a file of their own, not in the personas: they belong to the model and change
with Google's price list, not with a bot's behaviour, and every persona on a model must be
costed alike. Cost is estimated per persona (``bot.metrics``) from the tokens each turn's
``usageMetadata`` reports (``pipelines.gemini.usage``).

Format (US dollars per million tokens)::

    currency: USD
    models:
      default: {input: {text: 0.5, audio: 3.0}, output: {text: 2.0, audio: 12.0}}
      gemini-3.8-live: {input: {...}, output: {...}}

``input`` prices prompt and tool-result tokens, ``output`` response and thinking tokens. A
model not listed uses ``default``; a modality not listed (or ``unspecified``) uses ``text``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Token kinds (``pipelines.gemini.usage.KINDS``) billed at input and at output prices.
INPUT_KINDS = frozenset({"prompt", "tool_prompt"})
OUTPUT_KINDS = frozenset({"response", "thoughts"})
PER_TOKENS = 1_000_000


class PricingError(ValueError):
    """The pricing file is not what is expected."""


@dataclass(frozen=True)
class ModelPrices:
    """One model's prices, USD per million tokens, by modality."""

    input: dict[str, float] = field(default_factory=dict)
    output: dict[str, float] = field(default_factory=dict)

    def per_token(self, kind: str, modality: str) -> float:
        """USD for one token of ``kind`` in ``modality`` (0 for a kind that is not billed)."""
        table = self.input if kind in INPUT_KINDS else self.output if kind in OUTPUT_KINDS else {}
        price = table.get(modality, table.get("text", 0.0))
        return price / PER_TOKENS


@dataclass(frozen=True)
class Pricing:
    """Prices by model (``default`` for models not listed)."""

    models: dict[str, ModelPrices] = field(default_factory=dict)
    currency: str = "USD"

    def for_model(self, model: str) -> ModelPrices:
        """The prices of ``model`` (its ``models/`` prefix ignored), else ``default``."""
        name = model.removeprefix("models/")
        return self.models.get(name) or self.models.get("default") or ModelPrices()

    def cost(self, model: str, tokens: dict[tuple[str, str], int]) -> float:
        """USD for ``{(kind, modality): tokens}`` on ``model``."""
        prices = self.for_model(model)
        return sum(prices.per_token(k, m) * n for (k, m), n in tokens.items())

    @classmethod
    def parse(cls, data: Any, where: str) -> Pricing:
        """Pricing from the YAML document ``data`` (``where`` names it in errors).

        Raises:
            PricingError: naming the file, the key, what was found and what is expected.
        """
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise PricingError(
                f"{where}: expected a mapping with 'models: {{MODEL: {{input: {{text: USD, "
                f"audio: USD}}, output: {{...}}}}}}', got {type(data).__name__}"
            )
        models: dict[str, ModelPrices] = {}
        for name, body in data["models"].items():
            if not isinstance(body, dict) or set(body) - {"input", "output"}:
                raise PricingError(
                    f"{where}: models.{name}: expected keys input and output, got {body!r}"
                )
            tables: dict[str, dict[str, float]] = {}
            for side in ("input", "output"):
                table = body.get(side) or {}
                if not isinstance(table, dict) or not all(
                    isinstance(v, int | float) and v >= 0 for v in table.values()
                ):
                    raise PricingError(
                        f"{where}: models.{name}.{side}: expected {{modality: USD per million "
                        f"tokens (a number >= 0)}}, got {table!r}"
                    )
                tables[side] = {str(k).lower(): float(v) for k, v in table.items()}
            models[str(name)] = ModelPrices(tables["input"], tables["output"])
        return cls(models, str(data.get("currency", "USD")))

    @classmethod
    def load(cls, path: Path) -> Pricing:
        """Read ``path``.

        Raises:
            OSError: it cannot be read.
            PricingError: it is not valid YAML of the expected shape.
        """
        text = path.read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise PricingError(f"{path}: not valid YAML: {e}") from e
        return cls.parse(data, str(path))
