"""Real Criteo ids are folded onto the proxy tables the reference's way (id % rows): only when
needed, in place, staying int32."""
import numpy as np

from pinchpoint.data.criteo import IdFolder, fold_ids


def test_fold_matches_the_reference_modulo_in_place_int32():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 40_000_000, (256, 3), dtype=np.int32)
    expected = (ids.astype(np.int64) % 1000).astype(np.int32)
    out = fold_ids(ids, 1000)
    assert out is ids and out.dtype == np.int32 and np.array_equal(out, expected)


def test_ids_below_the_table_size_are_left_alone():
    ids = np.arange(10, dtype=np.int32).reshape(5, 2)
    before = ids.copy()
    assert np.array_equal(fold_ids(ids, 10), before)


def test_folder_keeps_folding_a_table_once_it_needed_it():
    folder = IdFolder([100, 1000])
    first = [np.array([[150]], np.int32), np.array([[5]], np.int32)]
    assert [int(a[0, 0]) for a in folder(first)] == [50, 5] and folder.folding == [True, False]
    later = [np.array([[7]], np.int32), np.array([[1500]], np.int32)]
    assert [int(a[0, 0]) for a in folder(later)] == [7, 500] and folder.folding == [True, True]
