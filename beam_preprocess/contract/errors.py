"""The one error type for malformed CASIA input: it always names the file and the byte offset."""


class CasiaFormatError(ValueError):
    """A GNT or DGRL file is malformed at a known byte offset.

    Attributes:
      path: the file (or a description of the stream) that is malformed.
      offset: byte offset of the record (or field) where the problem starts.
      reason: what is wrong, in words.
    """

    def __init__(self, path: str, offset: int, reason: str):
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(f"{path}: byte offset {offset}: {reason}")

    def as_dict(self) -> dict:
        return {"file": self.path, "offset": self.offset, "reason": self.reason}
