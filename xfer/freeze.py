"""Freeze and unfreeze layers by name, glob or regex, and transfer schedules.

Parameters are selected by their layer (``embedding``, ``encoder``, ``hidden``, ``ngrams``,
``output``) or their full parameter name, with a glob (``enc*``) or a regex
(``re:^hidden_``). A pattern that matches nothing is an error, never a no-op.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from .errors import ConfigError
from .models import layer_names


def _matches(pattern: str, layer: str, param: str) -> bool:
    if pattern.startswith("re:"):
        rx = re.compile(pattern[3:])
        return bool(rx.search(layer) or rx.search(param))
    return fnmatch.fnmatchcase(layer, pattern) or fnmatch.fnmatchcase(param, pattern)


def select_params(net, patterns: str | Sequence[str]) -> dict[str, object]:
    """Parameters of ``net`` whose layer or name matches any pattern (each must match something)."""
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    chosen: dict[str, object] = {}
    for pattern in patterns:
        hit = False
        for layer in layer_names(net):
            for name, p in getattr(net, layer).collect_params().items():
                if _matches(pattern, layer, name):
                    chosen[name] = p
                    hit = True
        if not hit:
            raise ConfigError(f"freeze: pattern {pattern!r} matches no layer or parameter "
                              f"(layers: {', '.join(layer_names(net))})")
    return chosen


def set_trainable(net, patterns: str | Sequence[str], trainable: bool = True) -> list[str]:
    """Set ``grad_req`` of the matched parameters to ``write`` (trainable) or ``null`` (frozen).

    Returns the names changed. A hybridized network's cached graph is rebuilt on the next call.
    """
    chosen = select_params(net, patterns)
    for p in chosen.values():
        p.grad_req = "write" if trainable else "null"
    if getattr(net, "_active", False):
        net.hybridize(active=True, static_alloc=True)  # drop the cached graph built with the old grad_req
    return sorted(chosen)


def freeze(net, patterns: str | Sequence[str]) -> list[str]:
    return set_trainable(net, patterns, False)


def unfreeze(net, patterns: str | Sequence[str]) -> list[str]:
    return set_trainable(net, patterns, True)


def trainable_report(net) -> dict[str, dict[str, int]]:
    """Per layer: number of scalar parameters that train and that are frozen."""
    import numpy as np

    report = {}
    for layer in layer_names(net):
        counts = {"trainable": 0, "frozen": 0}
        for p in getattr(net, layer).collect_params().values():
            counts["trainable" if p.grad_req != "null" else "frozen"] += int(np.prod(p.shape))
        report[layer] = counts
    return report


def set_lr_mult(net, mults: Mapping[str, float]) -> None:
    """Learning-rate multiplier per named layer (layers without parameters are skipped)."""
    known = layer_names(net)
    for layer, m in mults.items():
        if layer not in known:
            raise ConfigError(f"lr_mult: unknown layer {layer!r} (layers: {', '.join(known)})")
        for p in getattr(net, layer).collect_params().values():
            p.lr_mult = float(m)


# --------------------------------------------------------------------------- schedules
SCHEDULES = ("frozen", "full", "gradual", "discriminative", "scratch")


@dataclass
class Schedule:
    """What trains in each epoch of relearning (``conf/schedule/*.yaml``).

    - ``frozen``: only the new head (``output``, plus ``hidden`` when it was replaced)
    - ``full`` / ``scratch``: every layer, one learning rate (scratch starts from random init)
    - ``gradual``: the head first, then one more layer group per ``unfreeze_every`` epochs,
      from the top down (ULMFiT, Howard & Ruder 2018)
    - ``discriminative``: every layer, learning rate multiplied by ``decay`` once per layer
      below the output (output 1, hidden decay, encoder decay^2, embedding decay^3)

    An ``ngrams`` branch counts as the layer just below ``output`` (models.LAYERS).
    """

    name: str = "gradual"
    unfreeze_every: int = 1
    decay: float = 1 / 2.6
    head: tuple[str, ...] = ("output",)

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise ConfigError(f"schedule.name: unknown schedule {self.name!r} ({' | '.join(SCHEDULES)})")
        if int(self.unfreeze_every) < 1:
            raise ConfigError("schedule.unfreeze_every must be >= 1")

    def unfreeze_order(self, net) -> list[str]:
        """Layers below the head, top first."""
        return [l for l in reversed(layer_names(net)) if l not in self.head]

    def trainable_at(self, net, epoch: int) -> list[str]:
        layers = layer_names(net)
        if self.name in ("full", "scratch", "discriminative"):
            return list(layers)
        if self.name == "frozen":
            return [l for l in layers if l in self.head]
        steps = epoch // int(self.unfreeze_every)
        return [l for l in layers if l in self.head] + self.unfreeze_order(net)[:steps]

    def lr_mults(self, net) -> dict[str, float]:
        if self.name != "discriminative":
            return {l: 1.0 for l in layer_names(net)}
        ordered = list(reversed(layer_names(net)))
        return {l: float(self.decay) ** i for i, l in enumerate(ordered)}

    def apply(self, net, epoch: int) -> list[str]:
        """Set grad_req for ``epoch``; returns the trainable layers."""
        on = self.trainable_at(net, epoch)
        off = [l for l in layer_names(net) if l not in on and list(getattr(net, l).collect_params().keys())]
        for p in net.collect_params().values():
            p.grad_req = "write"
        if off:
            freeze(net, off)
        elif getattr(net, "_active", False):
            net.hybridize(active=True, static_alloc=True)
        return on


def make_schedule(cfg: Mapping | None, hidden_replaced: bool = False) -> Schedule:
    """A Schedule from a ``schedule`` config (validated against xfer.schema)."""
    from .schema import section

    head: Iterable[str] = ("hidden", "output") if hidden_replaced else ("output",)
    return Schedule(head=tuple(head), **section("schedule", cfg))
