"""Dataset folders: a folder rebuilt in place (or another folder with the same name and layout) is never served from
datasets' stale Arrow cache."""

from __future__ import annotations

from retrieval_policies.common.dataset_io import load_split, write_dataset_folder


def test_a_rebuilt_folder_is_read_again(tmp_path):
    first, second = tmp_path / "a" / "data", tmp_path / "b" / "data"  # same base name, same layout
    write_dataset_folder(
        first, {"pairs": {"train": [{"x": 1}, {"x": 2}]}}, pretty_name="t", card_body="t", license="other"
    )
    assert load_split(str(first), "pairs", "train")["x"] == [1, 2]
    write_dataset_folder(second, {"pairs": {"train": [{"x": 7}]}}, pretty_name="t", card_body="t", license="other")
    assert load_split(str(second), "pairs", "train")["x"] == [7]
    write_dataset_folder(
        first, {"pairs": {"train": [{"x": 3}, {"x": 4}, {"x": 5}]}}, pretty_name="t", card_body="t", license="other"
    )
    assert load_split(str(first), "pairs", "train")["x"] == [3, 4, 5]


def test_load_split_reads_a_downloaded_jsonl_file(tmp_path):
    """The published GRACE mix is a JSONL download, not a Hub dataset: the builders read it by path."""
    from retrieval_policies.common.dataset_io import load_split

    path = tmp_path / "echo_data_total.jsonl"
    path.write_text(
        '{"query": "q", "positive": "p", "negative": "n"}\n{"query": "q2", "positive": "p2", "negative": "n2"}\n'
    )
    rows = load_split(str(path), "triplet", "train")
    assert rows.column_names == ["query", "positive", "negative"] and rows[1]["query"] == "q2"


def test_another_folder_of_the_same_name_and_layout_is_read_as_itself(tmp_path):
    """datasets keys its cache by a folder's base name, config and layout: a second folder "data" with other columns
    was refused with the first one's features, even with force_redownload."""
    write_dataset_folder(
        tmp_path / "a" / "data",
        {"pool": {"train": [{"id": "1", "flag": True}] * 5}},
        pretty_name="a",
        card_body="x",
        license="mit",
    )
    write_dataset_folder(
        tmp_path / "b" / "data",
        {"pool": {"train": [{"id": "2", "text": "t"}] * 2}},
        pretty_name="b",
        card_body="x",
        license="mit",
    )
    assert load_split(str(tmp_path / "a" / "data"), "pool")["flag"] == [True] * 5
    second = load_split(str(tmp_path / "b" / "data"), "pool")
    assert second.column_names == ["id", "text"] and second["id"] == ["2", "2"]
