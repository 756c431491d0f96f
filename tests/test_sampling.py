"""Subset samplers (eolab.data.sampling) and representativeness metrics (eolab.data.representativeness).

Synthetic pools check each sampler's contract; one test runs every sampler on real scenes.
"""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from benchmarks.sampling import BENCH_SPECS
from eolab.data.representativeness import (
    FourierFeatures,
    equal_area_cells,
    js_divergence,
    nearest_distances,
    overlap_fraction,
    stratum_metrics,
    vendi_score,
)
from eolab.data.sampling import (
    SAMPLERS,
    Pool,
    allocate,
    box_sums,
    greedy_kcenter,
    parse_spec,
    pool_reference,
    select,
    window_statistics,
)
from eolab.evaluate.probe import encoder_features


def toy_pool(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Three sources of unequal size, spread over a few places, with cloud/no-data flags and 4-d features."""
    rng = np.random.default_rng(seed)
    sizes = {"a": n * 2 // 3, "b": n // 4, "c": n - n * 2 // 3 - n // 4}
    source = np.repeat(list(sizes), list(sizes.values()))
    scene = np.repeat(np.arange(3), list(sizes.values()))
    cloud = rng.uniform(0, 1, n) * (rng.random(n) < 0.3)
    cloud[source == "c"] = np.nan  # a source without a cloud mask
    return pd.DataFrame({
        "id": [f"s{s}@{i},0+8" for i, s in enumerate(scene)], "scene": scene, "source": source,
        "row": np.arange(n) * 8, "col": 0,
        "lon": rng.uniform(-60, 60, n), "lat": rng.uniform(-50, 50, n),
        "time": np.where(source == "a", "2020-01-15", np.where(source == "b", "2020-07-15", None)),
        "cloud_frac": cloud, "nodata_frac": np.where(rng.random(n) < 0.1, 0.2, 0.0),
    })


def toy_features(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)


CACHELESS = ("uniform", "geo_grid", "stratified:source", "stratified:season", "kcenter", "kmeans", "clear",
             "0.5*uniform+0.5*kcenter", "0.3*stratified:source+0.7*kmeans(max_k=8)")


@pytest.mark.parametrize("spec", CACHELESS)
def test_exact_budget_unique_and_seeded(spec):
    tiles = toy_pool()
    pool = Pool(tiles, features=toy_features(len(tiles)))
    a = select(spec, pool, 40, seed=1)
    assert len(a.indices) == 40 and len(np.unique(a.indices)) == 40
    assert np.all(np.diff(a.indices) > 0) and a.indices.min() >= 0 and a.indices.max() < len(tiles)
    assert a.ids == tiles["id"].iloc[a.indices].tolist()
    b = select(spec, pool, 40, seed=1)
    assert np.array_equal(a.indices, b.indices) and a.manifest == b.manifest
    c = select(spec, pool, 40, seed=2)
    assert not np.array_equal(a.indices, c.indices)


def test_registry_names():
    assert {"uniform", "pandas_uniform", "geo_grid", "stratified", "kcenter", "kmeans", "clear", "torchgeo_grid",
            "torchgeo_random"} <= set(SAMPLERS)


def test_pandas_uniform_reproduces_the_earlier_draw():
    tiles = toy_pool()
    old = tiles.sample(n=50, random_state=7).sort_index()
    sel = select("pandas_uniform", tiles, 50, seed=7)
    assert sel.ids == old["id"].tolist()
    with pytest.raises(ValueError, match="whole pool"):
        select("pandas_uniform(max_nodata=0)", tiles, 50, seed=7)


def test_stratified_equal_allocation_water_fills():
    labels = np.repeat(["big", "mid", "tiny"], [1000, 100, 10])
    rng = np.random.default_rng(0)
    got = labels[allocate(labels, 24, rng)]
    assert {k: int((got == k).sum()) for k in ("big", "mid", "tiny")} == {"big": 8, "mid": 8, "tiny": 8}
    got = labels[allocate(labels, 25, rng)]  # one left over: to one seeded random stratum
    assert sorted(int((got == k).sum()) for k in ("big", "mid", "tiny")) == [8, 8, 9]
    got = labels[allocate(labels, 200, rng)]  # tiny gives up 57 of its share: 10 + 95 + 95
    assert {k: int((got == k).sum()) for k in ("big", "mid", "tiny")} == {"big": 95, "mid": 95, "tiny": 10}
    got = labels[allocate(labels, 111, rng, "proportional")]
    assert {k: int((got == k).sum()) for k in ("big", "mid", "tiny")} == {"big": 100, "mid": 10, "tiny": 1}


def test_stratified_by_source_is_balanced():
    tiles = toy_pool()
    sel = select("stratified:source", tiles, 60, seed=0)
    assert tiles["source"].iloc[sel.indices].value_counts().to_dict() == {"a": 20, "b": 20, "c": 20}
    sel = select("stratified:source(alloc=proportional)", tiles, 60, seed=0)
    assert tiles["source"].iloc[sel.indices].value_counts().to_dict() == {"a": 40, "b": 15, "c": 5}


def test_stratified_by_season_marks_missing_dates_unknown():
    tiles = toy_pool()
    pool = Pool(tiles)
    season = pool.column("season")
    south = tiles["lat"].to_numpy() < 0
    a = (tiles["source"] == "a").to_numpy()  # January
    assert set(season[a & ~south]) == {"winter"} and set(season[a & south]) == {"summer"}
    assert set(season[(tiles["source"] == "c").to_numpy()]) == {"unknown"}
    assert set(pool.column("month")) == {"01", "07", "unknown"}


def test_geo_grid_balances_places():
    # 500 windows at one place, 20 at another: uniform follows the windows, geo_grid the places.
    lon = np.r_[np.full(500, 10.0), np.full(20, 100.0)]
    tiles = pd.DataFrame({"id": [f"t{i}+8" for i in range(520)], "lon": lon, "lat": 0.0})
    sel = select("geo_grid(cell_km=100)", tiles, 40, seed=0)
    assert (lon[sel.indices] == 100.0).sum() == 20


def test_equal_area_cells_count_area_not_degrees():
    # Points uniform on the sphere (uniform in sin(lat)): an equatorial and a mid-latitude cell
    # receive the same count (a 1-degree grid would give the 50-degree cell cos(50) = 0.64 as many).
    rng = np.random.default_rng(0)
    lon = rng.uniform(-180, 180, 400_000)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, 400_000)))
    cells = equal_area_cells(lon, lat, 1000.0)
    at = equal_area_cells(np.array([5.0, 5.0]), np.array([0.5, 50.0]), 1000.0)
    counts = [(cells == c).sum() for c in at]
    assert counts[1] / counts[0] == pytest.approx(1.0, abs=0.1)


def test_kcenter_covers_clusters_better_than_uniform():
    rng = np.random.default_rng(0)
    centres = np.eye(5) * 20
    z = np.concatenate([c + rng.normal(0, 0.5, (m, 5)) for c, m in zip(centres, (2000, 10, 10, 10, 10), strict=True)])  # (2040, 5)
    tiles = pd.DataFrame({"id": [f"t{i}+8" for i in range(len(z))]})
    pool = Pool(tiles, features=z)
    k = select("kcenter", pool, 8, seed=0).indices
    u = select("uniform", pool, 8, seed=0).indices
    zz = pool.z
    assert nearest_distances(zz, zz[k]).max() < nearest_distances(zz, zz[u]).max()
    cluster = np.repeat(np.arange(5), (2000, 10, 10, 10, 10))
    assert set(cluster[k]) == set(range(5))


def test_greedy_kcenter_with_duplicates_never_repeats():
    z = np.zeros((20, 3), np.float32)
    picks = greedy_kcenter(z, 20, np.random.default_rng(0))
    assert sorted(picks) == list(range(20))


def test_kmeans_one_representative_per_cluster():
    rng = np.random.default_rng(1)
    z = np.concatenate([c + rng.normal(0, 0.1, (200, 2)) for c in ([0, 0], [10, 0], [0, 10], [10, 10])])
    tiles = pd.DataFrame({"id": [f"t{i}+8" for i in range(len(z))]})
    sel = select("kmeans", tiles, 4, seed=0, features=z)
    assert sorted(sel.indices // 200) == [0, 1, 2, 3]


def test_filters_exclude_cloudy_and_nodata():
    tiles = toy_pool()
    pool = Pool(tiles, features=toy_features(len(tiles)))
    cloud, nodata = tiles["cloud_frac"].to_numpy(), tiles["nodata_frac"].to_numpy()
    clear = select("clear", pool, 100, seed=0).indices
    assert np.all(nodata[clear] == 0)
    assert np.all((cloud[clear] == 0) | np.isnan(cloud[clear]))  # unknown cloud is kept by default
    drop = select("clear(unknown_cloud=drop)", pool, 100, seed=0).indices
    assert np.all(cloud[drop] == 0)
    some = select("kcenter", pool, 100, seed=0, max_cloud=0.3).indices
    assert np.nanmax(cloud[some]) <= 0.3
    with pytest.raises(ValueError, match="only .* remain after its filters"):
        select("clear(unknown_cloud=drop)", pool, 390, seed=0)


def test_mixture_proportions_and_canonical_spec():
    tiles = toy_pool()
    pool = Pool(tiles, features=toy_features(len(tiles)))
    sel = select("0.7*stratified:source + 0.3*uniform", pool, 101, seed=0)
    assert [c["n"] for c in sel.manifest["components"]] == [71, 30]
    assert sel.manifest["sampler"] == "0.7*stratified:source+0.3*uniform"
    sel = select("uniform+kcenter", pool, 7, seed=0)
    assert [c["n"] for c in sel.manifest["components"]] == [4, 3]
    a = select("geo_grid(alloc=equal,cell_km=50)", pool, 30, seed=0)
    b = select("geo_grid(cell_km=50.0, alloc=equal)", pool, 30, seed=0)
    assert a.manifest["sampler"] == b.manifest["sampler"] and a.manifest["ids_sha1"] == b.manifest["ids_sha1"]


@pytest.mark.parametrize(("spec", "budget", "message"), [
    ("unifrom", 10, r"parameter 'sampling' = 'unifrom': unknown sampler 'unifrom'; known: \["),
    ("", 10, "empty"),
    ("stratified", 10, "needs a column"),
    ("stratified:landcover", 10, "no column 'landcover'"),
    ("uniform:source", 10, "takes no ':source'"),
    ("kcenter(k=3)", 10, "has no option 'k'"),
    ("geo_grid(cell_km=-1)", 10, "'cell_km' of 'geo_grid' must be > 0"),
    ("geo_grid(alloc=most)", 10, r"must be one of \['equal', 'proportional'\]"),
    ("clear(max_cloud=2)", 10, r"must be a fraction in \[0, 1\]"),
    ("0*uniform+kcenter", 10, "weight of 'uniform' must be > 0"),
    ("uniform*0.5", 10, "cannot read"),
    ("uniform", 0, "'budget' must be a positive integer"),
    ("uniform", 2.5, "'budget' must be a positive integer"),
    ("uniform", 10_000, "'budget' = 10000 exceeds the 600 candidate patches"),
])
def test_clear_errors(spec, budget, message):
    tiles = toy_pool()
    with pytest.raises(ValueError, match=message):
        select(spec, tiles, budget, features=toy_features(len(tiles)))


def test_options_from_keywords_and_numpy_scalars():
    tiles = toy_pool()
    a = select("kmeans", tiles, 20, features=toy_features(len(tiles)), max_k=np.int64(5), max_nodata=np.float32(0))
    assert a.manifest["components"][0]["options"] == {"max_k": 5, "max_nodata": 0.0}
    b = select("kmeans(max_k=5,max_nodata=0)", tiles, 20, features=toy_features(len(tiles)))
    assert a.manifest == b.manifest


def test_error_names_the_notebook_parameter():
    with pytest.raises(ValueError, match="parameter 'pretrain_sampling'"):
        parse_spec("nope", param="pretrain_sampling")
    with pytest.raises(ValueError, match="parameter 'n_pretrain'"):
        select("uniform", toy_pool(), 0, budget_param="n_pretrain")


def test_features_need_cache_or_given_features():
    with pytest.raises(ValueError, match="need the scene cache"):
        select("kcenter", toy_pool(), 10)


def test_manifest_hash_stable_and_written(tmp_path):
    tiles = toy_pool()
    sel = select("stratified:source", tiles, 30, seed=3)
    m = sel.manifest
    assert m["ids_sha1"] == hashlib.sha1("\n".join(sel.ids).encode()).hexdigest()
    assert m["pool_sha1"] == hashlib.sha1("\n".join(tiles["id"]).encode()).hexdigest()
    assert (m["budget"], m["seed"], m["n_pool"]) == (30, 3, len(tiles))
    again = select("stratified:source", tiles.sample(frac=1.0, random_state=0).sort_index(), 30, seed=3)
    assert again.manifest["ids_sha1"] == m["ids_sha1"]
    written = json.loads(sel.write(tmp_path / "sample.json").read_text())
    assert written["ids"] == sel.ids and written["ids_sha1"] == m["ids_sha1"]
    assert hashlib.sha1("\n".join(written["ids"]).encode()).hexdigest() == written["ids_sha1"]


# ---- metrics ----


def test_vendi_identical_is_one_orthogonal_is_n():
    same = np.tile([[1.0, 2.0, 3.0]], (50, 1))
    assert vendi_score(same) == pytest.approx(1.0)
    assert vendi_score(np.eye(6)) == pytest.approx(6.0)
    assert vendi_score(np.eye(6)[:3]) == pytest.approx(3.0)
    ff = FourierFeatures.make(3, bandwidth=1.0, n_features=256)
    assert vendi_score(same, "rbf", ff) == pytest.approx(1.0)
    ff = FourierFeatures.make(5, bandwidth=1.0, n_features=256)
    far = np.eye(5) * 100  # five points far apart at the kernel's scale: about five distinct points
    assert vendi_score(far, "rbf", ff) == pytest.approx(5.0, rel=0.1)


def test_coverage_zero_when_sample_is_pool_and_js_bounds():
    z = toy_features(300)
    assert np.allclose(nearest_distances(z, z), 0, atol=1e-3)
    assert js_divergence([1, 2, 3], [1, 2, 3]) == pytest.approx(0.0)
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)


def test_stratum_metrics():
    pool = np.repeat(["a", "b"], [900, 100])
    equal = stratum_metrics(pool, np.r_[np.arange(50), 900 + np.arange(50)])
    assert equal["balance"] == pytest.approx(1.0) and equal["covered"] == 1.0 and equal["effective"] == pytest.approx(2.0)
    assert equal["ess"] < 0.7  # pool is 90/10, so the 50/50 sample needs heavy reweighting
    prop = stratum_metrics(pool, np.r_[np.arange(90), 900 + np.arange(10)])
    assert prop["ess"] == pytest.approx(1.0)
    one = stratum_metrics(pool, np.arange(10))
    assert one["balance"] == 0.0 and one["covered"] == 0.5


def test_overlap_fraction():
    scene = np.array([0, 0, 0, 1])
    row, col = np.array([0, 32, 200, 0]), np.array([0, 0, 0, 0])
    assert overlap_fraction(scene, row, col, patch=64) == pytest.approx(0.5)


def test_reference_metrics_sample_equals_pool():
    tiles = toy_pool()
    pool = Pool(tiles, features=toy_features(len(tiles)))
    ref = pool_reference(pool, seed=0)
    full = ref.measure(np.arange(len(tiles)))
    assert full["coverage_mean"] == pytest.approx(0.0, abs=1e-3)
    assert full["spectral_js"] == pytest.approx(0.0, abs=1e-9) and full["geo_js"] == pytest.approx(0.0, abs=1e-9)
    assert full["ess_source"] == pytest.approx(1.0) and full["covered_scene"] == 1.0
    small = ref.measure(select("uniform", pool, 30, seed=0).indices)
    assert small["coverage_mean"] > 0 and small["spectral_js"] > 0
    assert np.isfinite(small["mean_cloud"]) and "mean_nodata" in small


def test_box_sums_match_slices():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 65535, (40, 50), dtype=np.uint16)
    r, c = np.array([0, 3, 24]), np.array([0, 10, 34])
    want = [img[a : a + 16, b : b + 16].astype(np.int64).sum() for a, b in zip(r, c, strict=True)]
    assert box_sums(img, r, c, 16).tolist() == want
    sq = img.astype(np.int64) ** 2
    assert box_sums(sq, r, c, 16).tolist() == [sq[a : a + 16, b : b + 16].sum() for a, b in zip(r, c, strict=True)]


# ---- real data ----


@pytest.fixture(scope="module")
def real(root):
    from eolab.data.cache import build_scene_cache

    cache = build_scene_cache(root, ("hydro", "ssl4eo"))
    return cache, cache.tiles(patch=64, stride=8)


def test_window_statistics_match_direct_reads(real):
    cache, tiles = real
    stats = window_statistics(cache, tiles.iloc[[0, 500, len(tiles) - 1]], 64)
    for k, (_, t) in enumerate(tiles.iloc[[0, 500, len(tiles) - 1]].iterrows()):
        w = np.asarray(cache.array(t["scene"])[:, t["row"] : t["row"] + 64, t["col"] : t["col"] + 64], np.float64) * 1e-4
        c = len(cache.bands)
        assert np.allclose(stats["features"][k, :c], w.mean((1, 2)), rtol=1e-5)
        assert np.allclose(stats["features"][k, c:], np.log(w.std((1, 2)) + 1e-3), atol=1e-4)
        assert stats["nodata_frac"][k] == pytest.approx((w == 0).all(0).mean())
    assert np.isnan(stats["cloud_frac"]).all()  # hydro and SSL4EO products carry no cloud mask here


@pytest.mark.slow
def test_every_benchmarked_sampler_on_real_scenes(real):
    cache, tiles = real
    pool = Pool(tiles, cache)
    ref = pool_reference(pool)
    for spec in BENCH_SPECS:
        sel = select(spec, pool, 64, seed=0)
        assert len(np.unique(sel.indices)) == 64, spec
        m = ref.measure(sel.indices)
        assert 1.0 <= m["vendi_cos"] <= 2 * len(cache.bands) and m["coverage_mean"] > 0, spec
    # torchgeo's grid at stride = patch, edge chips dropped: windows that never overlap.
    grid = select("torchgeo_grid", pool, 64, seed=0)
    assert ref.measure(grid.indices)["overlap_frac"] == 0.0
    with pytest.raises(ValueError, match="fewer than the budget"):
        select("torchgeo_grid", pool, 2000, seed=0)


@pytest.mark.slow
def test_kcenter_on_encoder_embeddings(real):
    import torch

    from eolab.data.stats import Normalization
    from eolab.models.vit import build_encoder

    cache, tiles = real
    small = tiles.iloc[::40].reset_index(drop=True)
    bands = cache.bands
    norm = Normalization(bands, "reflectance", dict.fromkeys(bands, 0.1), dict.fromkeys(bands, 0.05))
    torch.manual_seed(0)
    enc = build_encoder("vit_nano", bands, img_size=64, patch_size=16)
    feats = encoder_features(enc, norm, cache, small, 64, chunk=50)
    assert feats.shape[0] == len(small) and np.isfinite(feats).all()
    sel = select("kcenter", small, 10, cache=cache, features=feats)
    assert len(np.unique(sel.indices)) == 10 and sel.manifest["features"] == "given"


# --- wired into the pre-training entry point -------------------------------------------------------


def test_sampling_parameter_is_validated_before_any_work():
    from eolab.config import PretrainConfig

    with pytest.raises(ValueError, match="parameter 'sampling'.*unknown sampler 'unifrom'"):
        PretrainConfig(sampling="unifrom", n_pretrain=10)
    with pytest.raises(ValueError, match="parameter 'sampling'.*n_pretrain"):
        PretrainConfig(sampling="kcenter")  # no budget to sample


@pytest.mark.slow
def test_pretraining_set_from_a_named_sampler_is_recorded(tmp_path):
    import eolab.pipeline as ex

    cfg = ex.PretrainConfig(n_pretrain=64, sampling="stratified:source", output_dir=str(tmp_path))
    data = ex.prepare_data(cfg)
    assert len(data.pretrain) == 64
    sample = data.manifest["sample"]
    assert sample["sampler"].startswith("stratified:source") and sample["file"] == ex.SAMPLE_FILE
    assert data.sample.representativeness["balance_source"] == pytest.approx(1.0)  # equal allocation per source
    assert sample["ids_sha1"] == data.manifest["patches_sha1"]  # the manifest hashes exactly what trains
