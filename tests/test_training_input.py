"""Which training input a run uses: the windows materialised in the object store only while they are small
(a share of the store and at most CACHE_MAX_BYTES), else streamed. No Ray cluster needed."""

import pytest

from raygr.distributed import train
from tests.helpers import tiny_config


@pytest.mark.parametrize("store_gb, windows, materialised", [
    (8, 100_000, True),       # 32 MB of windows (T=20)
    (8, 2_050_530, False),    # the 20M-interaction benchmark: 656 MB, under 20 % of the store but over the cap
    (0.1, 100_000, False),    # a small store: over 20 % of it
])
def test_windows_are_materialised_only_while_small(monkeypatch, store_gb, windows, materialised):
    monkeypatch.setattr(train.ray, "available_resources", lambda: {"object_store_memory": store_gb * 1e9})
    cfg = tiny_config("data.max_history=20")
    assert train.windows_fit_in_store(cfg, windows) is materialised


def test_ray_data_holds_a_bounded_share_of_the_store_while_feeding_the_workers():
    opts = train.ingest_options(tiny_config())
    assert opts.resource_limits.object_store_memory == 64 << 20  # train.ingest_store_mib's default
    assert train.ingest_options(tiny_config("train.ingest_store_mib=128")).resource_limits.object_store_memory \
        == 128 << 20
    assert opts.resource_limits.cpu == float("inf")  # only the store share is bounded


def test_the_ingest_bound_names_its_key_when_too_small():
    from raygr.config import ConfigError
    with pytest.raises(ConfigError, match=r"train\.ingest_store_mib.*>= 8"):
        tiny_config("train.ingest_store_mib=1")
