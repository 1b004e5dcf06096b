"""How far a final upload can be assembled from its partial uploads: a pure rule,
no I/O, no locks (tested as a table, like :mod:`tuswsgi.plan`).

A final upload (tus concatenation) is its parts' bytes in order.  Under
``concatenation-unfinished`` it exists before its parts are finished, and grows
as they finish: its data file holds the bytes of a leading run of finished parts,
each copied whole, so its size (its offset) is always the sum of that run's
lengths.  The service copies what :func:`plan_final` says is ready, under the
final's lock, whenever a part finishes, in whichever worker or host: the shared
store is the only place that knows the parts' state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class Part:
    """What the rule needs of one part.  ``gone``: terminated or expired (its
    length is still known from its tombstone) or forgotten (``length`` ``None``)."""

    length: Optional[int]
    finished: bool
    gone: bool = False


@dataclass(frozen=True)
class FinalStep:
    """``copied``: how many leading parts the final holds; ``ready``: the indexes
    of the finished parts to copy next, in order; ``length``: the final's length
    once every part's length is known; ``broken``: a part the final still needs
    is gone, so it can never complete."""

    copied: int
    ready: tuple[int, ...]
    length: Optional[int]
    broken: bool

    def completes(self, parts: int) -> bool:
        """Whether copying ``ready`` leaves no part to wait for."""
        return self.copied + len(self.ready) == parts


def plan_final(offset: int, parts: Sequence[Part]) -> FinalStep:
    """The next step for a final holding ``offset`` bytes of ``parts``."""
    copied = _copied(offset, parts)
    ready = []
    for index in range(copied, len(parts)):
        if parts[index].gone or not parts[index].finished:
            break
        ready.append(index)
    known = [part.length for part in parts if part.length is not None]
    length = sum(known) if len(known) == len(parts) else None
    broken = any(part.gone for part in parts[copied:])
    return FinalStep(copied, tuple(ready), length, broken)


def _copied(offset: int, parts: Sequence[Part]) -> int:
    """How many leading parts the ``offset`` bytes are.  Parts of no bytes at the
    end of the run are not counted: only a finished part is ever copied, and one
    of no bytes leaves no trace to tell."""
    position = 0
    for index, part in enumerate(parts):
        if position >= offset:
            return index
        if part.length is None:
            raise ValueError(f"final holds {offset} bytes, but part {index} has no known length")
        position += part.length
    if position != offset:
        raise ValueError(f"final holds {offset} bytes, its parts {position}")
    return len(parts)
