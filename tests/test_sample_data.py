"""The bundled sample dump is what the Quick start promises: real posts, real images, a real mix."""

import polars as pl
import pytest

from .conftest import SAMPLE, SHARED_T15


def test_sample_dump_has_the_promised_mix():
    posts = pl.read_parquet(SAMPLE / "posts.parquet")
    assert posts.height == 100 and posts["post_id"].n_unique() == 100
    assert set(posts["gold_label"]) == {"positive", "neutral", "negative"}
    assert posts["aspect"].null_count() > 0 and posts["aspect"].null_count() < posts.height
    exists = [(SAMPLE / p).is_file() for p in posts["image_path"]]
    assert exists.count(False) == 1


@pytest.mark.skipif(not SHARED_T15.is_dir(), reason="../shared/data/t15 is only present in the project workspace")
def test_sample_posts_come_from_the_t15_dev_split():
    posts = pl.read_parquet(SAMPLE / "posts.parquet")
    dev = pl.read_parquet(SHARED_T15 / "dev.parquet")
    joined = posts.join(dev, on="post_id", how="inner", suffix="_dev")
    assert joined.height == 100
    assert (joined["text"] == joined["text_dev"]).all()
    assert (joined["gold_label"] == joined["label"]).all()
