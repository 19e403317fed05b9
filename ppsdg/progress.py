"""Progress of the long steps a person waits for after the rounds (measuring, drawing the pictures), as
tqdm bars on stderr, silent where stderr is not a terminal (a log, a pipe, the tests: disable=None)."""
from __future__ import annotations

from types import TracebackType

from tqdm import tqdm


class Steps:
    """One bar over a task's named steps: `step(name)` as each begins; leaving the `with` block ends
    the last. The bar names the step running, so a step of minutes does not look like a hang."""

    def __init__(self, description: str, total: int) -> None:
        self.bar = tqdm(total=total, desc=description, unit="step", disable=None)
        self.begun = False

    def step(self, name: str) -> None:
        if self.begun:
            self.bar.update(1)
        self.begun = True
        self.bar.set_postfix_str(name)

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self.begun and kind is None:
            self.bar.update(1)
            self.bar.set_postfix_str("done")
        self.bar.close()
