"""The terminal's progress bar for a program's members (`resnet_jax.lifecycle.Member`)."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm


class Progress:
    """The terminal's progress bar: one run's loss, error and lr, or how many members still train."""

    def __init__(self, members: list[Any], start: int):
        cfg = members[0].cfg
        label = f"{cfg.model.name}-{cfg.model.depth}"
        label = label if len(members) == 1 else f"{len(members)} x {label}"
        self.members = members
        self.bar = tqdm(
            total=cfg.trainer.steps, initial=start, disable=not cfg.trainer.progress, desc=label, unit="step"
        )

    def update(self, count: int) -> None:
        self.bar.update(count)
        if len(self.members) > 1:
            self.bar.set_postfix(training=sum(m.live for m in self.members))
            return
        final = self.members[0].record.final if self.members[0].record else {}
        if "train/loss" in final:
            self.bar.set_postfix(
                loss=f"{final['train/loss']:.3f}", err=f"{final['train/error']:.1f}%", lr=f"{final['lr']:.3g}"
            )

    def close(self) -> None:
        self.bar.close()
