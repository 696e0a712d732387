import re
import sys

from sonic_testing import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def test_pyproject_carries_the_comfy_registry_metadata():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    project, comfy = data["project"], data["tool"]["comfy"]
    # registry node id rules: < 100 chars, letters/digits/-/_/., no leading digit or symbol, no double symbols
    assert re.fullmatch(r"[A-Za-z](?:[A-Za-z0-9]|[-_.](?![-_.]))*", project["name"]) and len(project["name"]) < 100
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["urls"]["Repository"].startswith("https://")
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert isinstance(comfy["includes"], list) and "Icon" in comfy
    assert "dependencies" in project.get("dynamic", [])  # taken from requirements.txt, which never pins torch


def test_templates_have_an_api_twin_and_the_api_folder_is_not_a_template():
    ui = sorted(p.stem for p in (REPO / "workflows").glob("*.json"))
    api = sorted(p.stem for p in (REPO / "workflows" / "api").glob("*.json"))
    assert ui and ui == api
    # ComfyUI lists templates from every accepted folder name; a second one would list each template twice
    assert not any((REPO / name).exists() for name in ("example_workflows", "example", "examples", "workflow"))
