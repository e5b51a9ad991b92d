from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from odeon_job.config import config_from_dict
from odeon_job.data.samples import Sample, SampleList, load_splits, parse_rows, read_samples, split_train_val
from odeon_job.errors import DataError


def _csv(tmp_path: Path, text: str, name: str = "train.csv") -> str:
    path = tmp_path / "ds" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return str(path)


def test_rows_resolve_relative_paths_against_the_csv_folder(tmp_path: Path) -> None:
    csv = _csv(tmp_path, "img/a.tif,msk/a.tif\n/abs/b.tif,/abs/mb.tif\n")
    samples = read_samples(csv)
    folder = tmp_path / "ds"
    assert list(samples) == [
        Sample(str(folder / "img/a.tif"), str(folder / "msk/a.tif"), f"{csv} row 1"),
        Sample("/abs/b.tif", "/abs/mb.tif", f"{csv} row 2"),
    ]


def test_a_header_row_and_blank_lines_are_tolerated(tmp_path: Path) -> None:
    csv = _csv(tmp_path, "image,mask\n\nimg/a.tif,msk/a.tif\n   \nimg/b.tif , msk/b.tif\n\n")
    samples = read_samples(csv)
    assert [Path(s.image).name for s in samples] == ["a.tif", "b.tif"]
    assert [s.origin.rsplit(" ", 1)[1] for s in samples] == ["3", "5"]  # rows as the file numbers its lines


def test_a_windows_style_crlf_file_with_bom_reads_the_same(tmp_path: Path) -> None:
    csv = tmp_path / "w.csv"
    csv.write_bytes("\ufeffimg/a.tif,msk/a.tif\r\nimg/b.tif,msk/b.tif\r\n".encode("utf-8"))
    assert [Path(s.mask).name for s in read_samples(str(csv))] == ["a.tif", "b.tif"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("img/a.tif,msk/a.tif\nimg/b.tif\n", r"train.csv row 2: expected 'image,mask', got 1 field\(s\): 'img/b.tif'"),
        ("img/a.tif,msk/a.tif,extra.tif\n", r"train.csv row 1: expected 'image,mask', got 3 field\(s\)"),
        ("img/a.tif,\n", r"train.csv row 1: expected 'image,mask'"),
        ("\n\n", r"train.csv: no samples"),
        ("image,mask\n", r"train.csv: no samples"),
    ],
)
def test_bad_rows_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_samples(_csv(tmp_path, text))


def test_quoted_and_plain_files_read_the_same(tmp_path: Path) -> None:
    """Plain files take a fast path (C string methods only); anything else the csv module."""
    rows = [(f"img/{k}.tif", f"msk/{k}.tif") for k in range(5)]
    plain = read_samples(_csv(tmp_path, "".join(f"{i},{m}\n" for i, m in rows), "plain.csv"))
    quoted = read_samples(_csv(tmp_path, "".join(f'"{i}",{m}\n' for i, m in rows), "quoted.csv"))
    assert [(s.image, s.mask, s.origin.rsplit(" ", 1)[1]) for s in plain] == [
        (s.image, s.mask, s.origin.rsplit(" ", 1)[1]) for s in quoted
    ]
    assert plain[-1] == plain[4] and plain[1:3] == [plain[1], plain[2]]
    with pytest.raises(IndexError):
        plain[5]


def _samples(n: int) -> SampleList:
    return SampleList("t.csv", [f"i{k}.tif" for k in range(n)], [f"m{k}.tif" for k in range(n)], np.arange(1, n + 1))


def test_split_is_reproducible_disjoint_and_sized_by_percentage() -> None:
    samples = list(_samples(20))
    train, val = (list(part) for part in split_train_val(_samples(20), 0.3, seed=42))
    assert (len(train), len(val)) == (14, 6)
    assert sorted(train + val, key=lambda s: s.image) == sorted(samples, key=lambda s: s.image)
    assert [list(part) for part in split_train_val(_samples(20), 0.3, seed=42)] == [train, val]
    assert list(split_train_val(_samples(20), 0.3, seed=7)[1]) != val
    assert train == [s for s in samples if s in train]  # CSV order kept
    assert [s.origin for s in val] == [f"t.csv row {int(s.image[1:-4]) + 1}" for s in val]


def test_split_keeps_at_least_one_sample_on_each_side() -> None:
    assert [len(part) for part in split_train_val(_samples(2), 0.01, seed=0)] == [1, 1]
    assert [len(part) for part in split_train_val(_samples(3), 0.99, seed=0)] == [1, 2]
    with pytest.raises(DataError, match="cannot split a single sample"):
        split_train_val(_samples(1), 0.3, seed=0)


def test_load_splits_uses_val_file_or_percentage_val(tmp_path: Path) -> None:
    rows = "".join(f"img/{k}.tif,msk/{k}.tif\n" for k in range(10))
    train_csv = _csv(tmp_path, rows)
    source = config_from_dict(
        {
            "data_source": {"train_file": train_csv, "percentage_val": 0.2},
            "train_setup": {"model_name": "unet"},
            "output_setup": {"output_folder": "o"},
        }
    )
    splits = load_splits(source.data_source, seed=42)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8, 2, 0)

    val_csv = _csv(tmp_path, "v.tif,vm.tif\n", "val.csv")
    test_csv = _csv(tmp_path, "t.tif,tm.tif\n", "test.csv")
    source = config_from_dict(
        {
            "data_source": {"train_file": train_csv, "val_file": val_csv, "test_file": test_csv},
            "train_setup": {"model_name": "unet"},
            "output_setup": {"output_folder": "o"},
        }
    )
    splits = load_splits(source.data_source, seed=42)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (10, 1, 1)


# --- every row has exactly two fields, or the CSV is refused naming the first bad line --------------------

_path = st.from_regex(r"[a-z0-9_]{1,8}(/[a-z0-9_]{1,8}){0,2}\.tif", fullmatch=True)
_field = st.one_of(_path, _path.map(lambda p: f" {p} "), _path.map(lambda p: f'"{p}"'), st.just(""))
_row = st.one_of(st.lists(_path, min_size=2, max_size=2), st.lists(_field, min_size=0, max_size=4))


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(_row, min_size=1, max_size=12), ending=st.sampled_from(["\n", "\r\n", "\r"]), final=st.booleans())
def test_a_csv_pairs_each_image_with_its_own_mask_or_names_its_first_bad_line(
    rows: list[list[str]], ending: str, final: bool
) -> None:
    """Whatever the fields, separators, blank lines and line endings, a CSV either parses to the pairs
    it lists, line for line, or is refused with the line number of the first row that has not exactly two
    non-empty fields. (A fast path once paired a mask as image when one row had 3 fields and another 1.)"""
    text = ending.join(",".join(fields) for fields in rows) + (ending if final else "")
    expected_pairs, expected_lines, first_bad = [], [], None
    for line, fields in enumerate(rows, 1):
        stripped = [f.strip().strip('"') for f in fields]
        if not any(stripped):
            continue  # a blank line
        if len(stripped) != 2 or not all(stripped):
            first_bad = line
            break
        expected_pairs.append((stripped[0], stripped[1]))
        expected_lines.append(line)
    if first_bad is None and not expected_pairs:
        return  # nothing to compare: read_samples refuses an empty file (tested above)
    if first_bad is not None:
        with pytest.raises(DataError, match=rf"^x\.csv row {first_bad}: expected 'image,mask'"):
            parse_rows("x.csv", text)
        return
    images, masks, lines, _ = parse_rows("x.csv", text)
    assert list(zip(images, masks, strict=True)) == expected_pairs
    assert lines.tolist() == expected_lines


def test_rows_of_three_and_one_fields_are_refused_not_re_paired(tmp_path: Path) -> None:
    """The case that trained with exit 0: rows 3-6 paired a mask as image and another tile's image as mask."""
    rows = [f"img/{k}.tif,msk/{k}.tif" for k in range(8)]
    rows[1] = "img/1.tif,msk/1.tif,extra.tif"
    rows[5] = "img/5.tif"
    with pytest.raises(DataError, match=r"train.csv row 2: expected 'image,mask', got 3 field"):
        read_samples(_csv(tmp_path, "\n".join(rows) + "\n"))


def test_a_semicolon_csv_is_refused_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"row 1: .*separated by ';'"):
        read_samples(_csv(tmp_path, "img/a.tif;msk/a.tif\n"))


def test_lone_carriage_returns_read_as_line_ends(tmp_path: Path) -> None:
    """A spreadsheet may save lines ending in a lone CR: the csv module alone refuses them with a traceback."""
    samples = read_samples(_csv(tmp_path, "img/a.tif,msk/a.tif\rimg/b.tif,msk/b.tif\r"))
    assert [(Path(s.image).name, s.origin.rsplit(" ", 1)[1]) for s in samples] == [("a.tif", "1"), ("b.tif", "2")]


# --- window columns: whole numbers, or the row is named -----------------------------------------------------

_number = st.one_of(
    st.integers(0, 10**6).map(str),
    st.integers(0, 10**6).map(lambda n: f"{n}.0"),
    st.sampled_from(["-1", "0", "1.5", "abc", "1e3", "nan", "inf", " 12 ", "", "1,5"]),
)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.one_of(st.lists(_number, min_size=4, max_size=4), st.none()), min_size=1, max_size=8))
def test_window_columns_are_whole_pixels_or_the_first_bad_row_is_named(rows: list[list[str] | None]) -> None:
    """Rows of image,mask and optionally col_off,row_off,width,height (as a spreadsheet may write them: 256.0,
    1e3, ' 12 ', or garbage): parsed to exact integers, or refused naming the first bad row and column."""
    lines, expected, first_bad = [], [], None
    for line, window in enumerate(rows, 1):
        lines.append(f"i{line}.tif,m{line}.tif" + ("," + ",".join(window) if window is not None else ""))
        if first_bad is not None:
            continue
        if window is None:
            expected.append([-1] * 4)
            continue
        fields = [field.strip() for field in window]
        if len(",".join(fields).split(",")) != 4 or not all(fields):
            first_bad = (line, None)  # a field holding a comma or an empty one: not 6 fields
            continue
        values = []
        for name, field in zip(("col_off", "row_off", "width", "height"), fields, strict=True):
            try:
                number = float(field)
            except ValueError:
                number = float("nan")
            least = 1 if name in ("width", "height") else 0
            if not (number == number and number != float("inf") and number == int(number) and number >= least):
                first_bad = (line, name)
                break
            values.append(int(number))
        if first_bad is None:
            expected.append(values)
    text = "\n".join(lines) + "\n"
    if first_bad is not None:
        line, name = first_bad
        pattern = rf"^x\.csv row {line}: " + (rf"{name} must be a whole number" if name else "expected 'image,mask'")
        with pytest.raises(DataError, match=pattern):
            parse_rows("x.csv", text)
        return
    _, _, _, windows = parse_rows("x.csv", text)
    if all(window is None for window in rows):
        assert windows is None
    else:
        assert windows.tolist() == expected
