"""Newline-delimited message assembly for stdio transports, in linear time and bounded memory.

Pure: no I/O. Each byte fed is copied once into the pending line and scanned for a newline once,
so a long line that arrives in many small frames costs time proportional to its length (the
naive `buffer += chunk; buffer.split(b"\\n")` rescans and recopies the whole buffer per chunk).
"""

from __future__ import annotations


class LineTooLong(ValueError):
    """A line grew past the assembler's limit; the stream cannot be trusted any further."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"stdout line longer than {limit} bytes without a newline")
        self.limit = limit


class LineAssembler:
    """Splits a byte stream into lines (without their b"\\n"). Not thread-safe.

    `feed` raises LineTooLong as soon as a pending line would exceed `max_line` bytes, before
    copying it, so memory stays below `max_line` plus one chunk. After that the assembler is
    spent: the caller must close the stream (the message boundary is lost).
    """

    def __init__(self, max_line: int) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self.max_line = max_line
        self._pending = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of the line not yet terminated."""
        return len(self._pending)

    def feed(self, data: bytes) -> list[bytes]:
        """The complete lines that `data` ends, in order; keeps the unterminated tail."""
        lines: list[bytes] = []
        start = 0
        while (nl := data.find(b"\n", start)) >= 0:
            self._check(nl - start)
            if self._pending:
                self._pending += data[start:nl]
                lines.append(bytes(self._pending))
                self._pending.clear()
            else:
                lines.append(data[start:nl])
            start = nl + 1
        self._check(len(data) - start)
        self._pending += data[start:]
        return lines

    def _check(self, more: int) -> None:
        if len(self._pending) + more > self.max_line:
            self._pending.clear()
            raise LineTooLong(self.max_line)
