"""docs/spec.md stays true: its all-defaults example parses to the same spec as the minimal one,
and every field of the spec models is documented."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel

from dtma.spec.models import ServerSpec, ToolboxSpec

DOC = Path(__file__).resolve().parents[2] / "docs/spec.md"


def _yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)


def test_the_spelled_out_defaults_are_the_real_defaults() -> None:
    minimal, spelled = (yaml.safe_load(b) for b in _yaml_blocks()[:2])
    assert len(minimal["servers"][0]) == 2
    assert ToolboxSpec.model_validate(spelled) == ToolboxSpec.model_validate(minimal)
    # Not vacuous: the spelled-out block names every field a server has.
    assert set(spelled["servers"][0]) == {f.alias or n for n, f in ServerSpec.model_fields.items()}


def _fields(model: type[BaseModel], seen: set[str]) -> set[str]:
    names: set[str] = set()
    for name, field in model.model_fields.items():
        names.add(field.alias or name)
        for arg in (field.annotation, *getattr(field.annotation, "__args__", ())):
            inner = getattr(arg, "__args__", (arg,))
            for t in (arg, *inner):
                if isinstance(t, type) and issubclass(t, BaseModel) and t.__name__ not in seen:
                    seen.add(t.__name__)
                    names |= _fields(t, seen)
    return names


def test_every_spec_field_is_documented() -> None:
    text = DOC.read_text()
    documented = {
        part.removesuffix("[]")
        for token in re.findall(r"`([a-z_.\[\]]+)`", text)
        for part in token.split(".")
    }
    missing = _fields(ToolboxSpec, set()) - documented
    assert not missing, f"docs/spec.md does not document {sorted(missing)}"


def test_the_readme_links_the_reference_docs_and_they_exist() -> None:
    readme = DOC.parents[1] / "README.md"
    links = re.findall(r"\]\(([^)#]+)\)", readme.read_text())
    assert {"docs/spec.md", "docs/runbook.md", "docs/security.md"} <= set(links)
    for link in links:
        if "://" not in link:
            assert (readme.parent / link).exists(), link
