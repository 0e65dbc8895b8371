"""One shape for the harness's context managers over start() and stop()."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Service:
    """`with` runs start() and, on the way out, stop(); a start that fails midway is
    cleaned up by stop() before the error goes on (stop() must cope with a partial start)."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
