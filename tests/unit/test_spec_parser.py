"""The spec parser's pool survives a stop/start cycle of the agent (Docker not up at boot)."""

from __future__ import annotations

from dtma.engine.spec_parser import SpecParser
from dtma.spec.policy import SpecPolicy

BODY = "servers: [{name: a, image: 'img:1'}]"


async def test_parsing_works_again_after_close() -> None:
    parser = SpecParser(SpecPolicy())
    assert (await parser.parse(BODY)).servers[0].name == "a"
    parser.close()
    parser.close()  # idempotent
    assert (await parser.parse(BODY)).servers[0].name == "a"
    parser.close()
