"""The registry: built-ins, entry-point plugins of installed packages, plugin files, and their errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types

import pytest

from attnbench.suite.core.errors import UserError
from attnbench.suite.core.registry import load_plugin_file, load_registry
from attnbench.variants import FAMILIES, builtin, defined_variants

EXAMPLE_VARIANT = textwrap.dedent(
    """
    from attnbench.variants.exact.naive import NaiveAttention
    from attnbench.variants.contract import VariantInfo

    class Installed(NaiveAttention):
        info = VariantInfo(name="installed-naive", family="exact", exact=True, gqa_native=True)
    """
)


def _install_fake_distribution(root, entry_points: str, modules: dict[str, str]):
    """A minimal installed distribution: a dist-info folder with entry points, and its modules."""
    dist = root / "attnbench_fake-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: attnbench-fake\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(entry_points)
    for name, source in modules.items():
        (root / f"{name}.py").write_text(source)


def test_builtins_are_found_in_their_files_without_importing_optional_packages():
    registry = load_registry()
    assert registry.names()[: len(builtin())] == list(builtin())
    # Family by family (the listing and colour order), each folder's modules in sorted order.
    places = [target.split(":")[0].split(".")[2:] for target in builtin().values()]
    assert [FAMILIES.index(family) for family, _ in places] == sorted(FAMILIES.index(family) for family, _ in places)
    for family in FAMILIES:
        modules = [module for f, module in places if f == family]
        assert modules == sorted(modules) and modules, family
    for name, target in builtin().items():
        assert registry.get(name).info.name == name  # registered under the name it declares
        assert target.startswith("attnbench.variants.") and ".contract" not in target
    for name in ("flash-attn", "xformers"):
        assert registry.unavailable_reason(name, "cpu")
    listed = subprocess.run(
        [sys.executable, "-c", "import sys; from attnbench.suite.core.registry import load_registry; load_registry(); "
         "print(sorted({'xformers', 'flash_attn', 'fla'} & set(sys.modules)))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert listed.stdout.strip() == "[]"


def test_a_module_registers_the_variants_it_defines_with_their_own_info():
    from attnbench.variants.contract import VariantInfo
    from attnbench.variants.exact.naive import NaiveAttention

    module = types.ModuleType("fake_variants")
    imported = NaiveAttention  # imported into the module: not its own
    inherits = type("Inherits", (NaiveAttention,), {"__module__": "fake_variants"})  # naive's info, not its own
    info = VariantInfo(name="own", family="exact", exact=True, gqa_native=True)
    own = type("Own", (NaiveAttention,), {"__module__": "fake_variants", "info": info})
    module.Imported, module.Inherits, module.Own = imported, inherits, own
    assert [cls.__name__ for cls in defined_variants(module)] == ["Own"]


def test_an_entry_point_must_use_the_name_its_class_declares(tmp_path, monkeypatch):
    _install_fake_distribution(
        tmp_path, "[attnbench.variants]\nalias = fake_variant:Installed\n", {"fake_variant": EXAMPLE_VARIANT}
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_registry()
    assert "declares the name 'installed-naive'" in registry.unavailable_reason("alias", "cpu")
    assert "installed-naive" not in registry.names()


def test_unknown_variant_suggests_the_closest_name():
    with pytest.raises(UserError, match=r"unknown variant 'chunkd'.*did you mean 'chunked'"):
        load_registry().get("chunkd")


def test_entry_point_plugin_is_found_and_a_broken_one_is_unavailable(tmp_path, monkeypatch):
    _install_fake_distribution(
        tmp_path,
        "[attnbench.variants]\ninstalled-naive = fake_variant:Installed\nbroken = fake_broken:Nothing\n",
        {"fake_variant": EXAMPLE_VARIANT, "fake_broken": "raise ImportError('needs a GPU library')\n"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_registry()
    assert registry.entry("installed-naive").origin.startswith("entry point fake_variant:Installed")
    assert registry.unavailable_reason("installed-naive", "cpu") is None
    assert "needs a GPU library" in registry.unavailable_reason("broken", "cpu")
    assert registry.unavailable_reason("naive", "cpu") is None  # the rest still works


def test_plugin_file_errors_are_one_line(plugins, tmp_path):
    with pytest.raises(UserError, match="plugin file not found"):
        load_plugin_file(tmp_path / "missing.py")
    with pytest.raises(UserError, match="failed to import: ModuleNotFoundError"):
        load_plugin_file(plugins / "import_error.py")
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(UserError, match="defines no variant"):
        load_plugin_file(empty)


def test_plugin_name_clash_is_refused(tmp_path):
    clash = tmp_path / "clash.py"
    clash.write_text(EXAMPLE_VARIANT.replace('"installed-naive"', '"naive"'))
    with pytest.raises(UserError, match=r"'naive' .* already taken by built-in"):
        load_registry([clash])


def test_plugin_file_variants_are_registered(plugins):
    registry = load_registry([plugins / "top_left.py"])
    assert registry.plugin_file_names() == ["top-left"]
    assert registry.get("top-left").info.family == "exact"
