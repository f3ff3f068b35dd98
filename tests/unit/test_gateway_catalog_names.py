"""Exported resource URIs: `dtma://<server>/<the server's URI>`, split back without state."""

from __future__ import annotations

import pytest

from dtma.gateway.catalog import exported_uri, split_uri


@pytest.mark.parametrize(
    ("server", "uri"),
    [
        ("web", "kit://readme"),
        ("pipe", "file:///data/a%20b.txt"),
        ("web", "https://example.org/x?y=1#z"),
        ("a-1", "kit://items/{item}"),  # a template: the prefix is literal text
        ("web", "dtma://other/nested"),  # only the first prefix is ours
    ],
)
def test_exported_uris_split_back_exactly(server: str, uri: str) -> None:
    exported = exported_uri(server, uri)
    assert exported.startswith(f"dtma://{server}/")
    assert split_uri(exported) == (server, uri)


@pytest.mark.parametrize(
    "uri", ["kit://readme", "dtma://", "dtma://web", "dtma://web/", "dtma:///kit://x", ""]
)
def test_anything_else_is_not_routable(uri: str) -> None:
    assert split_uri(uri) is None
