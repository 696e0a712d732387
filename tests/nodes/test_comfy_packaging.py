import re
import sys

from sonic_testing import REPO, TEMPLATE_TITLES, template_ui_path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

RAW_URL = "https://raw.githubusercontent.com/sonic-comfyui/comfyui-sonic/main"


def test_pyproject_carries_the_comfy_registry_metadata():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    project, comfy = data["project"], data["tool"]["comfy"]
    # registry node id rules: < 100 chars, letters/digits/-/_/., no leading digit or symbol, no double symbols
    assert re.fullmatch(r"[A-Za-z](?:[A-Za-z0-9]|[-_.](?![-_.]))*", project["name"]) and len(project["name"]) < 100
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["urls"]["Repository"].startswith("https://")
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert isinstance(comfy["includes"], list)
    # the icon is shipped in the repo and referenced by its raw URL on the default branch (the registry fetches it)
    icon = REPO / comfy["Icon"].removeprefix(f"{RAW_URL}/")
    assert comfy["Icon"].startswith(f"{RAW_URL}/") and icon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "dependencies" in project.get("dynamic", [])  # taken from requirements.txt, which never pins torch


def test_templates_have_an_api_twin_and_the_api_folder_is_not_a_template():
    ui = set((REPO / "workflows").glob("*.json"))
    api = sorted((REPO / "workflows" / "api").glob("*.json"))
    assert {p.stem for p in api} == set(TEMPLATE_TITLES) and ui == {template_ui_path(p) for p in api}
    # the template browser shows the file name as the title and, "-" and "_" as spaces, as the description
    assert not any("-" in p.stem or "_" in p.stem for p in ui)
    # ComfyUI lists templates from every accepted folder name; a second one would list each template twice
    assert not any((REPO / name).exists() for name in ("example_workflows", "example", "examples", "workflow"))
