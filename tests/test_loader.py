import json
from collections import Counter

import numpy as np
import pytest

from pajama import PajamaError
from pajama.chunks import ChunkWriter
from pajama.loader import MixtureSampler, load_prepared, load_training_data, mixture, permute, split_blocks, stream_weights, validation_samples, verify_prepared
from pajama.corpora import LLAMA_WEIGHTS


def write_subset(directory, prefix, subset, tokens, chunk_size, manifest_chunks):
    writer = ChunkWriter(directory, prefix, chunk_size, np.dtype(np.uint16), filler=65000)
    writer.add(np.asarray(tokens, dtype=np.uint16))
    for name, n in writer.close():
        manifest_chunks.append({"file": name, "subset": subset, "tokens": n})


def weights_of(splits):
    """LLaMA's sampling weights over the subsets of ``splits``, as pretrain computes them."""
    return stream_weights({n: s.stream.tokens for n, s in splits.items()}, None, None)


def make_data(directory, sizes, chunk_size=100, sha256="abc"):
    """A prepared directory whose tokens encode (subset index, position) so reads can be checked."""
    directory.mkdir(parents=True, exist_ok=True)
    chunks = []
    for i, (subset, n) in enumerate(sorted(sizes.items())):
        write_subset(directory, f"{subset}_x-0000", subset, (np.arange(n) % 1000) + 1000 * i, chunk_size, chunks)
    manifest = {"tokenizer": {"sha256": sha256, "vocab_size": 8000}, "chunks": chunks}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return load_prepared(directory)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 100, 1000, 4097])
def test_permute_is_a_bijection(n):
    assert sorted(permute(i, n, key=12345) for i in range(n)) == list(range(n))


def test_permute_depends_on_key():
    assert [permute(i, 1000, 1) for i in range(20)] != [permute(i, 1000, 2) for i in range(20)]


def test_stream_reads_real_tokens_across_files_and_never_padding(tmp_path):
    data = make_data(tmp_path, {"arxiv": 950}, chunk_size=100)
    stream = data.streams["arxiv"]
    assert stream.tokens == 950 and len(stream.files) == 10
    np.testing.assert_array_equal(stream.read(90, 30), np.arange(90, 120))
    train, val = split_blocks(data, block=65, val_fraction=0.1, holdout=True)
    blocks = [stream.read(b * 65, 65) for b in range(train["arxiv"].count + val["arxiv"].count)]
    assert not any((b == 65000).any() for b in blocks)  # the filler is never read
    assert train["arxiv"].count + val["arxiv"].count == 950 // 65


def test_validation_blocks_never_overlap_training(tmp_path):
    data = make_data(tmp_path, {"arxiv": 5000, "c4": 3000})
    train, val = split_blocks(data, block=33, val_fraction=0.05, holdout=True)
    for name in ("arxiv", "c4"):
        t, v = train[name], val[name]
        assert v.count >= 1 and t.first + t.count == v.first
    sampler = MixtureSampler(train, weights_of(train), 33, seed=0)
    drawn = {(sampler.names[s], b) for s, b in sampler.draw(5000)}
    held = {(n, b) for n, b in validation_samples(val, weights_of(val), 10_000)}
    assert drawn and held and not drawn & held
    train, val = split_blocks(data, block=33, val_fraction=0.0, holdout=True)  # --val_fraction 0: train on everything
    assert val == {} and train["arxiv"].count == 5000 // 33


def test_mixture_proportions_match_weights(tmp_path):
    sizes = {s: 3000 for s in LLAMA_WEIGHTS}
    data = make_data(tmp_path, sizes)
    train, _ = split_blocks(data, block=10, val_fraction=0.0, holdout=False)
    sampler = MixtureSampler(train, weights_of(train), 10, seed=7)
    counts = Counter(sampler.names[s] for s, _ in sampler.draw(50_000))
    total = sum(LLAMA_WEIGHTS.values())
    for subset, weight in LLAMA_WEIGHTS.items():
        assert abs(counts[subset] / 50_000 - weight / total) < 0.01, subset


def test_mixture_renormalises_over_present_subsets():
    p = mixture(["arxiv", "book"], None)
    np.testing.assert_allclose(p, [2.5 / 7.0, 4.5 / 7.0])
    with pytest.raises(PajamaError, match="unknown subset"):
        mixture(["arxiv"], {"reddit": 1.0})
    with pytest.raises(PajamaError, match="positive sum"):
        mixture(["arxiv"], {"book": 1.0})


def test_subsets_of_other_corpora_are_sampled_by_their_tokens():
    p = mixture(["python", "rust"], None, tokens=[3000, 1000])  # no LLaMA weight for either
    np.testing.assert_allclose(p, [0.75, 0.25])
    np.testing.assert_allclose(mixture(["python", "rust"], {"python": 1.0, "rust": 1.0}), [0.5, 0.5])
    with pytest.raises(PajamaError, match="positive sum"):
        mixture(["python"], {"c4": 1.0}, tokens=[10])  # weights given explicitly: no fallback


def test_two_directories_mix_by_their_weights_and_inside_by_the_subset_weights(tmp_path):
    make_data(tmp_path / "slimpajama", {"c4": 4000, "common_crawl": 4000, "github": 4000})
    make_data(tmp_path / "starcoder", {"python": 6000, "java": 2000})
    data, directories = load_training_data({str(tmp_path / "slimpajama"): 0.69, str(tmp_path / "starcoder"): 0.31})
    assert directories == pytest.approx({"slimpajama": 0.69, "starcoder": 0.31})
    assert sorted(data.streams) == ["slimpajama/c4", "slimpajama/common_crawl", "slimpajama/github", "starcoder/java", "starcoder/python"]
    train, _ = split_blocks(data, block=10, val_fraction=0.0, holdout=False)
    weights = stream_weights({n: s.stream.tokens for n, s in train.items()}, None, directories)
    # Expected, computed independently: LLaMA's weights inside SlimPajama, tokens inside Starcoder.
    llama = {"c4": 15.0, "common_crawl": 67.0, "github": 4.5}
    expected = {f"slimpajama/{k}": 0.69 * v / sum(llama.values()) for k, v in llama.items()}
    expected |= {"starcoder/python": 0.31 * 0.75, "starcoder/java": 0.31 * 0.25}
    assert weights == pytest.approx(expected)
    sampler = MixtureSampler(train, weights, 10, seed=5)
    counts = Counter(sampler.names[s] for s, _ in sampler.draw(60_000))
    for name, p in expected.items():
        assert abs(counts[name] / 60_000 - p) < 0.01, name
    block = sampler.read([(sampler.names.index("starcoder/java"), 0)])[0]
    assert (block // 1000 == 0).all()  # java is the first subset of its directory: its own tokens
    # The same subset name in two directories stays two streams.
    make_data(tmp_path / "other", {"c4": 3000})
    both, _ = load_training_data({str(tmp_path / "slimpajama"): 1, str(tmp_path / "other"): 1})
    assert "other/c4" in both.streams and "slimpajama/c4" in both.streams


def test_mixed_directories_must_share_a_tokenizer(tmp_path):
    make_data(tmp_path / "a", {"c4": 100})
    make_data(tmp_path / "b", {"c4": 100}, sha256="def")
    with pytest.raises(PajamaError, match="another tokenizer"):
        load_training_data({str(tmp_path / "a"): 1, str(tmp_path / "b"): 1})
    with pytest.raises(PajamaError, match="positive sum"):
        load_training_data({str(tmp_path / "a"): 0})


def test_every_block_once_per_epoch_then_reshuffled(tmp_path):
    data = make_data(tmp_path, {"c4": 20 * 8})
    train, _ = split_blocks(data, block=8, val_fraction=0.0, holdout=False)
    sampler = MixtureSampler(train, weights_of(train), 8, seed=1)
    first = [b for _, b in sampler.draw(20)]
    second = [b for _, b in sampler.draw(20)]
    assert sorted(first) == sorted(second) == list(range(20))
    assert first != second


def test_global_stream_is_independent_of_world_size_and_resumable(tmp_path):
    data = make_data(tmp_path, {"arxiv": 4000, "c4": 4000, "github": 500})
    train, _ = split_blocks(data, block=9, val_fraction=0.0, holdout=False)
    one = MixtureSampler(train, weights_of(train), 9, seed=3)
    batches = [one.draw(12) for _ in range(6)]
    # A resumed sampler continues with exactly the same samples.
    resumed = MixtureSampler(train, weights_of(train), 9, seed=3)
    resumed.draw(12 * 3)
    state = json.loads(json.dumps(resumed.state_dict()))
    fresh = MixtureSampler(train, weights_of(train), 9, seed=3)
    fresh.load_state_dict(state)
    assert [fresh.draw(12) for _ in range(3)] == batches[3:]
    # Rank slices of each global batch are disjoint and together are the global batch.
    for batch in batches:
        slices = [batch[r * 6 : (r + 1) * 6] for r in range(2)]
        assert slices[0] + slices[1] == batch
    tokens = one.read(batches[0][:2])
    assert tokens.shape == (2, 9)


def test_sampler_refuses_state_of_other_data(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = make_data(tmp_path / "a", {"arxiv": 100})
    b = make_data(tmp_path / "b", {"c4": 100})
    sa = MixtureSampler(split_blocks(a, 9, 0, False)[0], {"arxiv": 1.0}, 9, 0)
    sb = MixtureSampler(split_blocks(b, 9, 0, False)[0], {"c4": 1.0}, 9, 0)
    with pytest.raises(PajamaError, match="subsets"):
        sb.load_state_dict(sa.state_dict())


def test_lit_llama_directory_without_manifest(tmp_path):
    chunks = []
    write_subset(tmp_path, "cc_2019-30_sample", "common_crawl", range(300), 100, chunks)
    write_subset(tmp_path, "common_crawl_0001", "common_crawl", range(200), 100, chunks)
    write_subset(tmp_path, "c4_sample", "c4", range(100), 100, chunks)
    data = load_prepared(tmp_path)
    assert sorted(data.streams) == ["c4", "common_crawl"]  # both of lit-llama's CC prefixes
    assert data.streams["common_crawl"].tokens == 500
    assert data.tokenizer_sha256 is None


def test_empty_or_unfinished_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(PajamaError, match="no prepared chunk files"):
        load_prepared(tmp_path)
    (tmp_path / "prepare.json").write_text("{}")
    with pytest.raises(PajamaError, match="prepare has not finished"):
        load_prepared(tmp_path)
    with pytest.raises(PajamaError, match="not found"):
        load_prepared(tmp_path / "missing")


def test_subset_smaller_than_one_sequence_is_named(tmp_path):
    data = make_data(tmp_path, {"arxiv": 1000, "book": 5})
    with pytest.raises(PajamaError, match="subset book has 5 tokens"):
        split_blocks(data, block=33, val_fraction=0.01, holdout=True)


def test_a_subset_of_one_chunk_file_feeds_many_ranks_without_running_dry(tmp_path):
    # lit-llama gave each rank its own files, so a subset with fewer files than ranks ended in StopIteration.
    data = make_data(tmp_path, {"arxiv": 3 * 10, "c4": 4000}, chunk_size=4000)
    assert len(data.streams["arxiv"].files) == 1
    train, _ = split_blocks(data, block=10, val_fraction=0.0, holdout=False)
    sampler = MixtureSampler(train, {"arxiv": 1.0, "c4": 1.0}, 10, seed=5)
    world = 8
    arxiv = []
    for _ in range(50):
        batch = sampler.draw(world)
        per_rank = [batch[r : r + 1] for r in range(world)]  # each rank's slice of the global batch
        for samples in per_rank:
            tokens = sampler.read(samples)
            assert tokens.shape == (1, 10)
        arxiv += [b for s, b in batch if sampler.names[s] == "arxiv"]
    assert len(arxiv) > 100  # the one-file subset is drawn on and on: a new epoch whenever it runs out
    epochs = [arxiv[i : i + 3] for i in range(0, len(arxiv) - 2, 3)]
    assert all(sorted(e) == [0, 1, 2] for e in epochs)  # each epoch reads every block once
    assert len({tuple(e) for e in epochs}) > 1  # in a fresh order


def make_checked_data(directory, tokens, chunk_size):
    """A prepared directory of one subset whose manifest records sizes and block checksums, as prepare writes them."""
    directory.mkdir(parents=True, exist_ok=True)
    writer = ChunkWriter(directory, "arxiv_x-0000", chunk_size, np.dtype(np.uint16), filler=65000)
    writer.add(np.asarray(tokens, dtype=np.uint16))
    chunks = [{"file": name, "subset": "arxiv", "tokens": n, "crc32": writer.checksums[name]} for name, n in writer.close()]
    manifest = {"tokenizer": {"sha256": "abc", "vocab_size": 8000}, "chunk_size": chunk_size, "dtype": "uint16", "checksums": {"kind": "crc32", "block_bytes": 1 << 20}, "chunks": chunks}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return [directory / c["file"] for c in chunks]


def test_a_truncated_chunk_file_is_named_before_its_tokens_are_used(tmp_path):
    files = make_checked_data(tmp_path, np.arange(3000) % 1000, chunk_size=1000)
    data = load_prepared(tmp_path)  # loading reads no chunk file
    stream = data.streams["arxiv"]
    np.testing.assert_array_equal(stream.read(0, 10), np.arange(10))
    with open(files[1], "r+b") as f:
        f.truncate(1500)
    with pytest.raises(PajamaError, match=r"arxiv_x-0000_0000000001.bin: truncated at byte 1,500: 1,500 bytes, expected 2,024 \(1,000 uint16 tokens\)"):
        stream.read(990, 20)  # reaches into the truncated file
    with pytest.raises(PajamaError, match=r"1 of 3 chunk files damaged: .*0000000001.bin: truncated at byte 1,500"):
        verify_prepared(tmp_path)


def test_an_overwritten_chunk_file_is_named_with_the_block_where_it_differs(tmp_path, capsys):
    tokens = np.arange(1_200_000) % 60000  # one chunk file of 2.4 MB: three checksum blocks
    (path,) = make_checked_data(tmp_path, tokens, chunk_size=1_200_000)
    verify_prepared(tmp_path)
    assert "verified 1 chunk files" in capsys.readouterr().out
    data = bytearray(path.read_bytes())
    data[1_500_000] ^= 0xFF  # same size, same header: only the checksums tell
    path.write_bytes(bytes(data))
    np.testing.assert_array_equal(load_prepared(tmp_path).streams["arxiv"].read(0, 5), tokens[:5])  # the cheap checks pass
    stream = load_prepared(tmp_path, verify_checksums=True).streams["arxiv"]
    with pytest.raises(PajamaError, match=r"arxiv_x-0000_0000000000.bin: damaged at byte 1,048,576: bytes 1,048,576-2,097,151 differ from what prepare wrote"):
        stream.read(0, 5)
    with pytest.raises(PajamaError, match=r"damaged at byte 1,048,576"):
        verify_prepared(tmp_path)
    # A header rewritten with another chunk size (and a file of that size): named at byte 0.
    from pajama.chunks import encode_header

    path.write_bytes(encode_header(np.dtype(np.uint16), 1_000) + np.zeros(1_000, np.uint16).tobytes() + b"\0" * (len(data) - 2_024))
    with pytest.raises(PajamaError, match=r"damaged at byte 16: its header is not the one of 1,200,000 uint16 tokens that the manifest says"):
        load_prepared(tmp_path).streams["arxiv"].read(0, 5)


def test_a_directory_prepared_before_checksums_still_loads_and_says_so_once(tmp_path, capsys):
    make_checked_data(tmp_path, np.arange(2500) % 1000, chunk_size=1000)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for chunk in manifest["chunks"]:
        del chunk["crc32"]
    del manifest["checksums"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    for _ in range(2):
        data = load_prepared(tmp_path, verify_checksums=True)
    np.testing.assert_array_equal(data.streams["arxiv"].read(995, 10), np.arange(995, 1005) % 1000)
    out = capsys.readouterr().out
    assert out.count("have no checksums (prepared before pajama recorded them)") == 1
    verify_prepared(tmp_path)
    assert "verified 3 chunk files" in capsys.readouterr().out


def test_a_mixture_over_several_directories_weighs_the_subsets_each_directory_has(tmp_path):
    make_data(tmp_path / "slimpajama", {"c4": 4000, "common_crawl": 4000, "github": 4000})
    make_data(tmp_path / "starcoder", {"python": 6000, "java": 2000})
    data, directories = load_training_data({str(tmp_path / "slimpajama"): 0.7, str(tmp_path / "starcoder"): 0.3})
    tokens = {n: s.tokens for n, s in data.streams.items()}
    weights = stream_weights(tokens, {"python": 3, "java": 1, "c4": 1, "common_crawl": 1}, directories)
    expected = {"slimpajama/c4": 0.35, "slimpajama/common_crawl": 0.35, "slimpajama/github": 0.0, "starcoder/python": 0.225, "starcoder/java": 0.075}
    assert weights == pytest.approx(expected)
    # Weights naming only code subsets: SlimPajama keeps its default (LLaMA's weights).
    only_code = stream_weights(tokens, {"python": 1, "java": 1}, directories)
    assert only_code["slimpajama/common_crawl"] == pytest.approx(0.7 * 67.0 / (67.0 + 15.0 + 4.5))
    assert only_code["starcoder/java"] == pytest.approx(0.15)
    with pytest.raises(PajamaError, match="unknown subset.*rust"):
        stream_weights(tokens, {"python": 1, "rust": 1}, directories)
