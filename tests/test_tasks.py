"""Task generators and loaders: definitions checked, release formats read, bad files named."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch

from attnbench.tasks import listops, load_task, mqar, pathfinder
from attnbench.tasks.base import FIRST_SYMBOL, IGNORE, PAD, DataFormatError

SYMBOL = {v: k for k, v in listops.VOCAB.items()}


# ----- ListOps -----


def test_listops_defaults_are_lra():
    p = listops.ListOpsParams()
    assert (p.max_depth, p.max_args, p.min_length, p.max_length) == (10, 10, 500, 2000)


def test_listops_generator_labels_are_the_values_of_the_expressions():
    params = listops.ListOpsParams(max_depth=4, max_args=4, min_length=10, max_length=60, train_size=300,
                                   val_size=20, test_size=20)  # fmt: skip
    data = listops.generate(params, seed=3)
    for tokens, label in zip(data.train.tokens, data.train.labels, strict=True):
        symbols = [SYMBOL[int(t)] for t in tokens if t != PAD]
        assert 10 < len(symbols) < 60
        assert listops.parse(symbols) == int(label)
    again = listops.generate(params, seed=3)
    assert torch.equal(again.train.tokens, data.train.tokens)


def test_listops_operators_by_hand():
    assert (
        listops.parse(["[MAX", "4", "3", "[MIN", "2", "3", "]", "1", "0", "[MED", "1", "5", "8", "9", "2", "]", "]"])
        == 5
    )
    assert listops.parse(["[SM", "7", "5", "[MAX", "1", "9", "]", "]"]) == 1
    assert listops.parse(["[MED", "1", "2", "3", "4", "]"]) == 2  # median 2.5, rounded down as LRA does


def test_listops_tokenizer_keeps_brackets_and_drops_parentheses(tmp_path):
    assert listops.source_symbols("( ( ( [MAX 2 ) 9 ) ] )") == ["[MAX", "2", "9", "]"]
    (tmp_path / "basic_train.tsv").write_text(LISTOPS_TSV)
    split = listops.read_tsv(tmp_path / "basic_train.tsv", max_len=8)
    assert [SYMBOL[int(t)] for t in split.tokens[0] if t != PAD] == ["[MAX", "2", "9", "]"]


LISTOPS_TSV = "Source\tTarget\n( ( ( [MAX 2 ) 9 ) ] )\t9\n( ( ( ( [SM 3 ) 4 ) 5 ) ] )\t2\n"


def write_listops(root, train=LISTOPS_TSV):
    folder = root / "lra_release" / "listops-1000"
    folder.mkdir(parents=True)
    for split in ("train", "val", "test"):
        (folder / f"basic_{split}.tsv").write_text(train if split == "train" else LISTOPS_TSV)
    return folder


def test_listops_release_files_load(tmp_path):
    write_listops(tmp_path)
    data = load_task("listops", {"max_len": 16}, data_dir=tmp_path)
    assert data.train.labels.tolist() == [9, 2]
    assert [SYMBOL[int(t)] for t in data.train.tokens[0] if t != PAD] == ["[MAX", "2", "9", "]"]
    assert data.num_classes == 10 and data.train.tokens.shape == (2, 16)


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        ("Src\tTarget\n", ":1:", "header"),
        ("Source\tTarget\n( [MAX 2 ] )\t2\n( [MAX 2 ] )\t3\textra\n", ":3:", "2 tab-separated fields"),
        ("Source\tTarget\n( [MAX 2 ] )\t2\n( [MOD 2 ] )\t2\n", ":3:", "unknown ListOps symbol '[MOD'"),
        ("Source\tTarget\n( [MAX 2 ] )\tten\n", ":2:", "target must be a digit"),
        ("Source\tTarget\n( [MAX 2 ] )\t\u00b2\n", ":2:", "target must be a digit"),  # isdigit() says yes
        ("Source\tTarget\n( [MAX 2 ] )\t2\n( ( [MAX 2 ) 3 )\t3\n", ":3:", "not a well-formed expression"),
        ("Source\tTarget\n( [MAX 2 ] )\t2\n( 2 ] )\t2\n", ":3:", "not a well-formed expression"),
        ("Source\tTarget\n( [MAX 2 ] )\t2\n( [MIN 2 7 ] )\t7\n", ":3:", "evaluates to 2, the target says 7"),
        ("Source\tTarget\n( [MAX 2 ] )\t2\n1 2\t2\n", ":3:", "2 top-level values, not one expression"),
        ("Source\tTarget\n( [MAX 2 ] )\t2\n( [MAX 1 ] ) 3\t3\n", ":3:", "2 top-level values"),
        ("Source\tTarget\n( [MAX 2 ] )\t2\n]\t2\n", ":3:", "a ']' closes no operator"),
        ('Source\tTarget\n( [MAX 2 ] )\t2\n"( [MAX 2 ] )\t2\n( [MAX 2 ] )\t2\n', ":3:", "unknown ListOps symbol"),
    ],
)
def test_listops_malformed_file_names_file_and_line(tmp_path, text, where, words):
    folder = write_listops(tmp_path, train=text)
    with pytest.raises(DataFormatError, match=re.escape(words)) as info:
        load_task("listops", data_dir=tmp_path)
    assert f"{folder / 'basic_train.tsv'}{where}" in str(info.value)


def test_release_expressions_longer_than_the_presets_length_are_left_out_and_counted(tmp_path):
    # The tiny preset generates up to 32 symbols; on release files the same bound holds (never a cut).
    long = "( " * 40 + "[SM " + " ) ".join(["1"] * 40) + " ) ] )"
    write_listops(tmp_path, train=LISTOPS_TSV + f"{long}\t0\n")
    data = load_task("listops", {"max_length": 32, "min_length": 4, "train_size": 10}, data_dir=tmp_path)
    assert data.train.tokens.shape == (2, 32) and data.train.skipped == 1
    assert "at most 32 symbols (1 longer left out)" in data.description


def test_missing_release_file_is_named(tmp_path):
    folder = write_listops(tmp_path)
    (folder / "basic_val.tsv").unlink()
    with pytest.raises(DataFormatError, match=r"missing ListOps file .*listops-1000/basic_val\.tsv"):
        load_task("listops", data_dir=tmp_path)


# ----- MQAR -----


def test_mqar_follows_zoology_definition():
    params = mqar.MqarParams(vocab_size=64, seq_len=64, num_kv_pairs=6, train_size=200, val_size=10, test_size=10)
    data = mqar.generate(params, seed=1)
    half = 32 + FIRST_SYMBOL
    for tokens, labels in zip(data.train.tokens, data.train.labels, strict=True):
        keys, values = tokens[0:12:2], tokens[1:12:2]
        assert (keys < half).all() and (keys >= FIRST_SYMBOL).all() and (values >= half).all()
        assert len(set(keys.tolist())) == 6
        asked = (labels != IGNORE).nonzero().flatten()
        assert len(asked) == 6 and (asked >= 12).all()
        for pos in asked.tolist():  # each query is a key, answered by that key's value
            key = int(tokens[pos])
            assert int(labels[pos]) == int(values[keys.tolist().index(key)])


def test_mqar_gaps_follow_a_power_law():
    params = mqar.MqarParams(vocab_size=256, seq_len=256, num_kv_pairs=4, train_size=2000, val_size=10, test_size=10)
    asked = (mqar.generate(params, seed=0).train.labels != IGNORE).nonzero()[:, 1] - 8
    near, far = (asked < 60).sum().item(), (asked >= 188).sum().item()
    assert near > 2 * far


def test_mqar_is_deterministic_and_cached(tmp_path):
    params = {"vocab_size": 32, "seq_len": 32, "num_kv_pairs": 4, "train_size": 50, "val_size": 5, "test_size": 5}
    first = load_task("mqar", params, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("mqar-*.pt"))) == 1
    second = load_task("mqar", params, cache_dir=tmp_path)
    assert torch.equal(first.train.tokens, second.train.tokens)
    other = load_task("mqar", params | {"data_seed": 1}, cache_dir=tmp_path)
    assert not torch.equal(first.train.tokens, other.train.tokens)


def test_two_runs_building_one_dataset_at_once_both_get_it(tmp_path, monkeypatch):
    # The race of two parallel runs: a second writer builds and stores the same dataset between the
    # first writer's save and its rename (a study's --parallel 2 lost a run to this).
    from attnbench.tasks import cache

    params = {"vocab_size": 32, "seq_len": 32, "num_kv_pairs": 4, "train_size": 20, "val_size": 5, "test_size": 5}
    save, calls = torch.save, []

    def save_then_let_another_writer_in(obj, f):
        save(obj, f)
        calls.append(f)
        if len(calls) == 1:
            load_task("mqar", params, cache_dir=tmp_path)

    monkeypatch.setattr(cache.torch, "save", save_then_let_another_writer_in)
    first = load_task("mqar", params, cache_dir=tmp_path)
    assert len(calls) == 2
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == [next(tmp_path.glob("mqar-*.pt")).name]
    assert torch.equal(load_task("mqar", params, cache_dir=tmp_path).train.tokens, first.train.tokens)


def test_bad_task_params_are_named():
    with pytest.raises(DataFormatError, match="task mqar: num_kv_pair"):
        load_task("mqar", {"num_kv_pair": 3})
    with pytest.raises(DataFormatError, match="need seq_len"):
        load_task("mqar", {"seq_len": 8, "num_kv_pairs": 4})


# ----- Pathfinder -----


def test_pathfinder_generator_is_balanced_and_not_solved_by_ink():
    params = pathfinder.PathfinderParams(train_size=120, val_size=10, test_size=10)
    data = pathfinder.generate(params, seed=0)
    assert data.train.tokens.shape == (120, 1024) and data.max_len == 1024
    labels = data.train.labels
    assert labels.sum().item() == 60
    ink = (data.train.tokens - FIRST_SYMBOL).float().mean(1)
    pos, neg = ink[labels == 1].mean(), ink[labels == 0].mean()
    assert abs(pos - neg) / neg < 0.1


def write_pathfinder(root, labels=(0, 1, 1, 0, 1, 0, 0, 1, 1, 0), bad_line=None):
    from PIL import Image

    folder = root / "lra_release" / "pathfinder32" / "curv_contour_length_14"
    (folder / "imgs" / "0").mkdir(parents=True)
    (folder / "metadata").mkdir()
    lines = []
    for i, label in enumerate(labels):
        Image.fromarray(np.full((32, 32), 20 * i, dtype=np.uint8)).save(folder / "imgs" / "0" / f"sample_{i}.png")
        lines.append(f"imgs/0 sample_{i}.png 0 {label} 14 1.5 1 0")
    if bad_line:
        lines.insert(2, bad_line)
    (folder / "metadata" / "0.npy").write_text("\n".join(lines) + "\n")
    return folder


def test_pathfinder_release_folder_loads(tmp_path):
    write_pathfinder(tmp_path)
    data = load_task("pathfinder", data_dir=tmp_path)
    assert len(data.train) == 8 and len(data.val) == 1 and len(data.test) == 1
    assert data.train.labels.tolist() == [0, 1, 1, 0, 1, 0, 0, 1]
    assert int(data.train.tokens[3, 0]) == 60 + FIRST_SYMBOL  # pixel value of sample_3


def test_pathfinder_malformed_metadata_names_file_and_line(tmp_path):
    folder = write_pathfinder(tmp_path, bad_line="imgs/0 sample_9.png")
    with pytest.raises(DataFormatError, match=f"{folder / 'metadata' / '0.npy'}:3:"):
        load_task("pathfinder", data_dir=tmp_path)


@pytest.mark.parametrize(
    ("labels", "words"), [((), "0 images listed"), ((0, 1, 1), "3 images listed; the 80/10/10 split needs at least 10")]
)
def test_pathfinder_empty_or_short_metadata_is_one_error(tmp_path, labels, words):
    write_pathfinder(tmp_path, labels=labels)
    with pytest.raises(DataFormatError, match=re.escape(words)):
        load_task("pathfinder", data_dir=tmp_path)


def test_pathfinder_image_listed_twice_is_named(tmp_path):
    folder = write_pathfinder(tmp_path, bad_line="imgs/0 sample_0.png 0 1 14 1.5 1 0")
    with pytest.raises(DataFormatError, match=r"0\.npy:3: imgs/0/sample_0\.png is listed twice \(first at 0\.npy:1\)"):
        load_task("pathfinder", data_dir=tmp_path)
    assert folder.is_dir()


def test_pathfinder_other_difficulty_is_selectable_and_missing_one_named(tmp_path):
    write_pathfinder(tmp_path)
    with pytest.raises(DataFormatError, match=r"missing pathfinder folder .*pathfinder32/curv_baseline"):
        load_task("pathfinder", {"difficulty": "easy"}, data_dir=tmp_path)


# ----- Text (IMDB) and Retrieval (AAN) -----


def write_imdb(root):
    for split in ("train", "test"):
        for sub, text in (("pos", "A great film!"), ("neg", "Dull. \xe9")):
            folder = root / "aclImdb" / split / sub
            folder.mkdir(parents=True)
            for i in range(5):
                (folder / f"{i}_7.txt").write_text(f"{text} {i}", encoding="utf-8")


def test_imdb_folder_loads_as_bytes(tmp_path):
    write_imdb(tmp_path)
    data = load_task("text", {"max_len": 64}, data_dir=tmp_path)
    assert len(data.train) + len(data.val) == 10 and len(data.test) == 10
    first_neg = [int(t) - FIRST_SYMBOL for t in data.test.tokens[0] if t != PAD]
    assert bytes(first_neg) == "Dull. \xe9 0".encode()
    assert data.test.labels.tolist() == [0] * 5 + [1] * 5


def test_imdb_missing_folder_is_named(tmp_path):
    write_imdb(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "aclImdb" / "test" / "neg")
    with pytest.raises(DataFormatError, match=r"missing IMDB folder .*aclImdb/test/neg"):
        load_task("text", data_dir=tmp_path)


def write_aan(root, extra_line=None):
    folder = root / "lra_release" / "tsv_data"
    folder.mkdir(parents=True)
    rows = ["1.0\tP01-1\tP02-2\tAttention is all.\tWe cite it.", "0\tP03-3\tP04-4\tParsing.\tVision."]
    if extra_line:
        rows.append(extra_line)
    for name in ("train", "eval", "test"):
        (folder / f"new_aan_pairs.{name}.tsv").write_text("\n".join(rows) + "\n")
    return folder


def test_aan_pairs_load_as_two_towers(tmp_path):
    write_aan(tmp_path)
    data = load_task("retrieval", {"max_len": 32}, data_dir=tmp_path)
    assert data.kind == "pair" and data.train.labels.tolist() == [1, 0]
    text2 = bytes(int(t) - FIRST_SYMBOL for t in data.train.tokens2[0] if t != PAD)
    assert text2 == b"We cite it."


@pytest.mark.parametrize(
    ("line", "words"),
    [("1\tonly\tthree", "expected 5 tab-separated fields"), ("yes\ta\tb\tc\td", "label must be 0 or 1")],
)
def test_aan_malformed_line_names_file_and_line(tmp_path, line, words):
    folder = write_aan(tmp_path, extra_line=line)
    with pytest.raises(DataFormatError, match=words) as info:
        load_task("retrieval", data_dir=tmp_path)
    assert f"{folder / 'new_aan_pairs.train.tsv'}:3:" in str(info.value)


def test_real_data_tasks_need_a_data_dir():
    with pytest.raises(DataFormatError, match="text is real data: give --data-dir"):
        load_task("text")


# ----- Image (CIFAR-10, the Python release) and Path-X -----


def write_cifar(root, per_batch: int = 10, corrupt: str | None = None):
    """cifar-10-batches-py in the release format: pickled dicts of b'data' (n, 3072) uint8 and b'labels'."""
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for b, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        data[0, :1024], data[0, 1024:2048], data[0, 2048:] = 200, 100, 50  # image 0: one flat colour
        labels = [(b + i) % 10 for i in range(per_batch)]
        batch = {b"batch_label": f"batch {b}".encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img_{b}_{i}.png".encode() for i in range(per_batch)]}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"] * 10}, protocol=2))
    if corrupt:
        (folder / corrupt).write_bytes((folder / corrupt).read_bytes()[:100])
    return folder


def test_cifar_release_loads_as_grayscale_pixel_sequences(tmp_path):
    write_cifar(tmp_path)
    data = load_task("image", data_dir=tmp_path)
    assert (data.name, data.kind, data.num_classes, data.max_len) == ("image", "classify", 10, 1024)
    assert (len(data.train), len(data.val), len(data.test)) == (45, 5, 10)  # LRA: the first 90% trains
    # tf.image.rgb_to_grayscale on uint8: weights on [0, 1] values, back by x * 255.5 truncated
    gray = int((0.2989 * 200 + 0.5870 * 100 + 0.1140 * 50) / 255 * 255.5)
    assert data.train.tokens[0].unique().tolist() == [gray + FIRST_SYMBOL]
    assert data.test.labels.tolist() == [(5 + i) % 10 for i in range(10)]
    assert int(data.train.tokens.max()) < data.vocab_size


@pytest.mark.parametrize("corrupt", ["data_batch_3", "test_batch"])
def test_a_malformed_cifar_batch_is_named(tmp_path, corrupt):
    write_cifar(tmp_path, corrupt=corrupt)
    with pytest.raises(DataFormatError, match=rf"{corrupt}: not a CIFAR-10 batch"):
        load_task("image", data_dir=tmp_path)


def test_cifar_batches_of_the_wrong_shape_or_missing_are_named(tmp_path):
    import pickle

    folder = write_cifar(tmp_path)
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": np.zeros((3, 100), np.uint8), b"labels": [0] * 3}))
    with pytest.raises(DataFormatError, match=r"data_batch_2: b'data' is uint8 \(3, 100\)"):
        load_task("image", data_dir=tmp_path)
    (folder / "data_batch_2").unlink()
    with pytest.raises(DataFormatError, match=r"missing CIFAR-10 batch file .*data_batch_2"):
        load_task("image", data_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="no CIFAR-10 data"):
        load_task("image", data_dir=tmp_path / "empty")


def test_grayscale_is_tensorflows_from_uint8():
    from attnbench.tasks.image import GRAY

    rgb = np.array([[255, 255, 255], [128, 128, 128], [1, 1, 1], [0, 0, 0], [10, 200, 30]], dtype=np.float64)
    want = [255, 128, 1, 0, 124]  # tf.image.rgb_to_grayscale of these uint8 pixels
    assert (np.floor(rgb / 255 @ GRAY * 255.5)).astype(int).tolist() == want


@pytest.mark.parametrize(
    ("labels", "message"),
    [([0.5] * 10, "labels must be integers 0-9, found 0.5"),
     ([2**70] + [0] * 9, "labels must be integers 0-9, found 1180591620717411303424"),
     ([10] + [0] * 9, "labels must be integers 0-9, found 10"), ([0] * 9, r"10 images but b'labels' has shape \(9,\)")],
)  # fmt: skip
def test_cifar_labels_that_are_not_integers_0_to_9_are_named(tmp_path, labels, message):
    import pickle

    folder = write_cifar(tmp_path)
    batch = {b"data": np.zeros((10, 3072), np.uint8), b"labels": labels}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataFormatError, match=f"test_batch: {message}"):
        load_task("image", data_dir=tmp_path)


def test_a_cifar_batch_saved_with_a_newer_pickle_protocol_loads(tmp_path):
    import pickle

    folder = write_cifar(tmp_path)
    batch = pickle.loads((folder / "data_batch_2").read_bytes())
    (folder / "data_batch_2").write_bytes(pickle.dumps(batch, protocol=5))
    assert len(load_task("image", data_dir=tmp_path).train) == 45


def test_a_cifar_pickle_that_builds_anything_else_is_refused_unrun(tmp_path):
    import pickle

    class Exploit:
        def __reduce__(self):
            return (os.getcwd, ())

    folder = write_cifar(tmp_path)
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}))
    # Ray, once imported, replaces builtins.print: a function of os is a stable stand-in for any callable.
    with pytest.raises(DataFormatError, match=rf"data_batch_1: not a CIFAR-10 batch .*refusing to build {os.name}"):
        load_task("image", data_dir=tmp_path)


def test_image_is_real_data_and_pathx_is_pathfinder_at_128():
    with pytest.raises(DataFormatError, match="image is real data"):
        load_task("image")
    tiny = {"contour_length": 6, "distractors": 1, "train_size": 4, "val_size": 2, "test_size": 2}
    data = load_task("pathx", tiny)
    assert data.name == "pathx" and data.max_len == 128 * 128 and data.train.tokens.shape == (4, 16384)
    with pytest.raises(DataFormatError, match="pathx: resolution is fixed at 128"):
        load_task("pathx", {**tiny, "resolution": 32})
