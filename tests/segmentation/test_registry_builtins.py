"""The registry finds its built-in back-ends lazily and skips modules that do not exist."""

from __future__ import annotations

import sys

from persodose.segmentation import registry


def test_builtin_tuple_names_the_backends():
    assert registry.BUILTIN_BACKENDS[:2] == ("persodose.segmentation.threshold",
                                             "persodose.segmentation.totalsegmentator")
    assert "persodose.segmentation.builtin" in registry.BUILTIN_BACKENDS


def test_missing_module_is_skipped_and_present_ones_loaded(monkeypatch):
    monkeypatch.setattr(registry, "BUILTIN_BACKENDS", ("persodose.segmentation.threshold",
                                                       "persodose.segmentation.no_such_backend"))
    fresh = registry._SegmenterRegistry("segmenter", identity=lambda info: info.function)
    monkeypatch.setattr(registry, "SEGMENTERS", fresh)
    monkeypatch.delitem(sys.modules, "persodose.segmentation.threshold")
    # re-importing threshold registers into the fresh registry (register_segmenter uses the module global)
    assert "threshold" in fresh.names()
    assert fresh.builtins == ("persodose.segmentation.threshold",)
    assert "persodose.segmentation.no_such_backend" not in sys.modules


def test_module_exists():
    assert registry._module_exists("persodose.segmentation.threshold")
    assert not registry._module_exists("persodose.segmentation.no_such_backend")
    assert not registry._module_exists("no_such_top_level_package_xyz.sub")


def test_totalsegmentator_is_registered_without_being_installed():
    info = registry.get_segmenter("totalsegmentator")
    assert info.extra == "totalseg" and "totalsegmentator" in info.requires
    assert {"lung_left", "lung_right", "spine", "ribs", "colon", "liver"} <= set(info.organs)
