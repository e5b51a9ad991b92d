"""Window plans (data/windows.py) and the samplers that shard them: properties over random regions, patches
and overlaps, no raster needed."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from odeon_job.config import config_from_dict
from odeon_job.data import sampler
from odeon_job.data.sampler import EpochShuffleSampler, GroupShardSampler, ShardSampler
from odeon_job.data.windows import GridWindows, RandomWindows
from odeon_job.errors import ConfigError

_regions = st.lists(
    st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(1, 300), st.integers(1, 300)), min_size=1, max_size=4
).map(lambda rows: np.asarray(rows, dtype=np.int64))


@st.composite
def _patch_and_overlap(draw: st.DrawFn) -> tuple[int, int]:
    patch = draw(st.integers(8, 96))
    return patch, draw(st.integers(0, patch - 1))


@settings(max_examples=150, deadline=None)
@given(regions=_regions, patch_overlap=_patch_and_overlap())
def test_a_grid_covers_each_region_and_its_windows_own_every_pixel_exactly_once(
    regions: np.ndarray, patch_overlap: tuple[int, int]
) -> None:
    patch, overlap = patch_overlap
    plan = GridWindows(regions, patch, overlap)
    owned = [np.zeros((h, w), np.int64) for _, _, h, w in regions]
    covered = [np.zeros((h, w), np.int64) for _, _, h, w in regions]
    last: dict[int, tuple[int, int]] = {}
    for index in range(len(plan)):
        read = plan(index)
        assert read.window is not None and read.owned is not None
        top, left, height, width = (int(v) for v in regions[read.row])
        row, col, h, w = read.window
        assert top <= row and left <= col and row + h <= top + height and col + w <= left + width
        assert (h, w) == (min(patch, height), min(patch, width))
        assert (row, col) > last.get(read.row, (-1, -1))  # row-major within a row's region (stitching needs it)
        last[read.row] = (row, col)
        o_top, o_left, o_bottom, o_right = read.owned
        assert 0 <= o_top < o_bottom <= h and 0 <= o_left < o_right <= w
        r, c = row - top, col - left
        covered[read.row][r : r + h, c : c + w] += 1
        owned[read.row][r + o_top : r + o_bottom, c + o_left : c + o_right] += 1
    for row_owned, row_covered in zip(owned, covered, strict=True):
        assert (row_owned == 1).all()  # the metrics count every pixel once
        assert (row_covered >= 1).all()
    assert sorted({plan(i).row for i in range(len(plan))}) == list(range(len(regions)))
    assert [plan.row_of(i) for i in range(len(plan))] == [plan(i).row for i in range(len(plan))]


def test_grid_windows_have_the_patch_s_size_the_last_ones_moved_back_to_the_edge() -> None:
    plan = GridWindows(np.array([[0, 0, 600, 300]]), 256, 0)
    # columns start at 0 and 44 and meet at 150; rows start at 0, 256, 344 and meet at 256 and 428
    assert [(r.window, r.owned) for r in map(plan, range(len(plan)))] == [
        ((0, 0, 256, 256), (0, 0, 256, 150)),
        ((0, 44, 256, 256), (0, 106, 256, 256)),
        ((256, 0, 256, 256), (0, 0, 172, 150)),
        ((256, 44, 256, 256), (0, 106, 172, 256)),
        ((344, 0, 256, 256), (84, 0, 256, 150)),
        ((344, 44, 256, 256), (84, 106, 256, 256)),
    ]
    overlapping = GridWindows(np.array([[10, 20, 300, 100]]), 256, 64)
    assert [(r.window, r.owned) for r in map(overlapping, range(len(overlapping)))] == [
        ((10, 20, 256, 100), (0, 0, 150, 100)),
        ((54, 20, 256, 100), (106, 0, 256, 100)),
    ]  # 300 rows: meet at 150


@settings(max_examples=100, deadline=None)
@given(
    regions=_regions,
    patch=st.integers(8, 128),
    seed=st.integers(-(2**40), 2**40),
    epoch=st.integers(0, 1000),
    count=st.one_of(st.just("area"), st.integers(1, 50)),
)
def test_random_windows_fall_in_their_region_and_depend_only_on_seed_epoch_and_index(
    regions: np.ndarray, patch: int, seed: int, epoch: int, count: int | str
) -> None:
    plan, again = RandomWindows(regions, patch, count, seed), RandomWindows(regions.copy(), patch, count, seed)
    expected = int(np.ceil(regions[:, 2] * regions[:, 3] / patch**2).sum()) if count == "area" else count
    assert len(plan) == expected
    for index in range(min(len(plan), 40)):
        read = plan(index, epoch)
        assert read == again(index, epoch)
        top, left, height, width = (int(v) for v in regions[read.row])
        row, col, h, w = read.window
        assert (h, w) == (min(patch, height), min(patch, width))
        assert top <= row <= top + height - h and left <= col <= left + width - w


def test_random_windows_change_with_the_epoch_and_follow_the_areas() -> None:
    regions = np.array([[0, 0, 4000, 4000], [0, 0, 1000, 1000]])
    plan = RandomWindows(regions, 64, 3400, seed=7)
    rows = np.array([plan(i, 0).row for i in range(len(plan))])
    assert 0.9 < (rows == 0).mean() / (16 / 17) < 1.1  # 16 times the area: 16 of every 17 windows
    assert [plan(i, 0).window for i in range(20)] != [plan(i, 1).window for i in range(20)]
    area = RandomWindows(regions, 1000, "area", seed=7)
    assert [area(i).row for i in range(len(area))] == [0] * 16 + [1]


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shards_of_every_process_together_hold_each_item_once(monkeypatch: pytest.MonkeyPatch, world: int) -> None:
    grid = GridWindows(np.array([[0, 0, 100, 100], [0, 0, 30, 250], [0, 0, 64, 64], [0, 0, 1, 1]]), 32, 8)
    groups = [grid.items_of_row(row) for row in range(4)]
    taken: dict[str, list[int]] = {"strided": [], "scenes": []}
    for rank in range(world):
        monkeypatch.setattr(sampler, "process_group", lambda rank=rank: (rank, world))
        strided, by_scene = list(ShardSampler(len(grid))), list(GroupShardSampler(groups))
        assert len(strided) == len(ShardSampler(len(grid))) and len(by_scene) == len(GroupShardSampler(groups))
        assert len({grid(i).row for i in by_scene}) == len(range(rank, 4, world))  # whole scenes
        taken["strided"] += strided
        taken["scenes"] += by_scene
    for indices in taken.values():
        assert sorted(indices) == list(range(len(grid)))


def test_training_windows_resume_the_same_whatever_the_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The random windows a process trains on are a function of (seed, epoch, index): sharded by the sampler,
    the same windows are trained on by one process or two, this epoch or after a restart."""
    plan = RandomWindows(np.array([[0, 0, 500, 700], [0, 0, 300, 300]]), 64, 40, seed=3)

    def epoch_windows(world: int, epoch: int) -> set:
        seen = set()
        for rank in range(world):
            monkeypatch.setattr(sampler, "process_group", lambda rank=rank: (rank, world))
            shuffle = EpochShuffleSampler(len(plan), seed=3)
            shuffle.set_epoch(epoch)
            seen |= {(index, plan(index, e).window) for index, e in shuffle}
        return seen

    assert epoch_windows(1, 4) == epoch_windows(2, 4)
    assert epoch_windows(1, 4) != epoch_windows(1, 5)


def _config(**data_source: object) -> dict:
    return {
        "data_source": {"train_file": "t.csv", **data_source},
        "train_setup": {"model_name": "lightunet"},
        "output_setup": {"output_folder": "o"},
    }


def test_window_keys_are_checked_by_the_schema() -> None:
    source = config_from_dict(_config(patch_size=256)).data_source
    assert (source.train_windows, source.grid_overlap) == ("area", 0)
    windowed = config_from_dict(_config(patch_size=256, train_windows=500, grid_overlap=32)).data_source
    assert (windowed.train_windows, windowed.grid_overlap) == (500, 32)
    for keys, message in [
        ({"grid_overlap": 8}, r"data_source\.grid_overlap.*set data_source\.patch_size"),
        ({"train_windows": 10}, r"data_source\.train_windows.*patch_size"),
        ({"patch_size": 64, "grid_overlap": 64}, r"grid_overlap.*smaller than patch_size"),
        ({"patch_size": 4}, r"data_source\.patch_size"),
        ({"patch_size": 64, "train_windows": "all"}, r"data_source\.train_windows"),
    ]:
        with pytest.raises(ConfigError, match=message):
            config_from_dict(_config(**keys))


class _Echo:
    """A dataset that returns the item it is asked for."""

    def __getitem__(self, item: object) -> object:
        return item


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 200), st.integers(1, 9), st.integers(1, 4), st.integers(0, 3))
def test_batches_per_epoch_are_counted_as_the_train_loader_makes_them(
    length: int, batch_size: int, world: int, rank: int
) -> None:
    """preflight's count (val_check_interval, testing) and the loader's batches come from one rule."""
    with mock.patch.object(sampler, "process_group", lambda: (rank % world, world)):
        shuffle = EpochShuffleSampler(length, seed=5)
        loader = DataLoader(
            _Echo(),  # type: ignore[arg-type]  # a map-style dataset needs only __getitem__
            batch_size=batch_size,
            sampler=shuffle,
            collate_fn=lambda items: items,
            drop_last=sampler.last_batch_is_single(len(shuffle), batch_size),
        )
        made = [len(batch) for batch in loader]
        assert len(made) == len(loader) == sampler.training_batches(length, batch_size, world)
    assert batch_size == 1 or len(made) == 1 or min(made) > 1  # the rule's reason: no lone item in a batch
