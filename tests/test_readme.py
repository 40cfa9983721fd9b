"""The README's configuration table lists every setting of `auditline serve`, no more."""

from __future__ import annotations

import dataclasses
import re

from auditline.server.config import Settings
from tests.support.paths import REPOSITORY

README = REPOSITORY / "README.md"


def test_the_configuration_table_names_every_flag() -> None:
    text = README.read_text()
    table = text[text.index("## Configuration") : text.index("## Tests")]
    listed = set(re.findall(r"`--([a-z-]+)`", table))
    flags = {field.name.replace("_", "-") for field in dataclasses.fields(Settings)}
    assert listed == flags
